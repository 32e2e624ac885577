//! A fresh vllm-sim fleet per arm (one process per pod, ports chosen by the OS and read back), and
//! a sampler that reads every pod's /metrics during a run.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::workload::Workload;

/// Running pods; killed when dropped.
pub struct Fleet {
    children: Vec<Child>,
    pub endpoints: Vec<String>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Fleet {
    pub async fn start(sim: &Path, workload: &Workload, dir: &Path) -> anyhow::Result<Self> {
        let mut fleet = Fleet {
            children: Vec::new(),
            endpoints: Vec::new(),
        };
        for (i, pod) in workload.pods.iter().enumerate() {
            let log = std::fs::File::create(dir.join(format!("pod-{i}.log")))?;
            let mut child = Command::new(sim)
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--seed",
                    &i.to_string(),
                ])
                .args(pod.args())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .spawn()
                .context("starting vllm-sim")?;
            let mut line = String::new();
            BufReader::new(child.stdout.take().context("vllm-sim stdout")?).read_line(&mut line)?;
            let addr = line
                .split_whitespace()
                .nth(4)
                .with_context(|| format!("vllm-sim printed {line:?}"))?
                .to_string();
            fleet.children.push(child);
            fleet.endpoints.push(addr);
        }
        let client = reqwest::Client::new();
        for e in &fleet.endpoints {
            let mut ok = false;
            for _ in 0..200 {
                if client
                    .get(format!("http://{e}/health"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            if !ok {
                bail!("pod {e} never became healthy");
            }
        }
        Ok(fleet)
    }
}

/// What the pods' pages said during a run.
#[derive(Debug, Default, Clone)]
pub struct PodSamples {
    pub kv: Vec<f64>,
    pub queue: Vec<f64>,
    /// Samples where an adapter had requests but no running slot.
    pub lora_waits: u64,
    pub prefix_hits: f64,
    pub prefix_queries: f64,
}

fn counter(page: &str, name: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Samples every pod every 500 ms until `stop` is set.
pub async fn sample(
    endpoints: Vec<String>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<PodSamples> {
    let client = reqwest::Client::new();
    let mut samples = vec![PodSamples::default(); endpoints.len()];
    let mut first: Vec<Option<(f64, f64)>> = vec![None; endpoints.len()];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for (i, e) in endpoints.iter().enumerate() {
            let Ok(r) = client.get(format!("http://{e}/metrics")).send().await else {
                continue;
            };
            let Ok(page) = r.text().await else { continue };
            let Ok(m) = switchyard_scraper::parse_page(
                &page,
                switchyard_scraper::Engine::Vllm,
                Instant::now(),
            ) else {
                continue;
            };
            let hits = counter(&page, "vllm:prefix_cache_hits_total");
            let queries = counter(&page, "vllm:prefix_cache_queries_total");
            let base = *first[i].get_or_insert((hits, queries));
            let s = &mut samples[i];
            s.kv.push(m.kv_usage);
            s.queue.push(f64::from(m.waiting));
            if let Some(l) = &m.lora
                && l.waiting.iter().any(|a| !l.running.contains(a))
            {
                s.lora_waits += 1;
            }
            s.prefix_hits = hits - base.0;
            s.prefix_queries = queries - base.1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    samples
}
