//! `switchyard-bench`: the fleet comparison (`compare`) of classic balancing, Switchyard and peer
//! routers, each in front of its own fresh vllm-sim fleet, on seeded identical workloads.

mod arms;
mod chart;
mod client;
mod envoy_config;
mod fleet;
mod overhead;
mod report;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;

use arms::{ALL_ARMS, Arm};
use report::ArmReport;
use workload::{Kind, Workload};

#[derive(Debug, Parser)]
#[command(name = "switchyard-bench", about = "Fleet benchmarks for Switchyard")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one workload at one or more rates through each arm.
    Compare(CompareArgs),
    /// Latency and throughput cost of the picker in front of an instant backend.
    Overhead {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds: every measurement is repeated this often, fronts interleaved; medians reported.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: u32,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct CompareArgs {
    #[arg(long, default_value = "seed")]
    workload: Kind,
    /// Requests/s, comma-separated (default: 85% of the fleet's measured capacity).
    #[arg(long, value_delimiter = ',')]
    rate: Vec<f64>,
    /// Seconds of arrivals per arm and rate.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Comma-separated arms (default: all).
    #[arg(long, value_delimiter = ',')]
    arms: Vec<Arm>,
    /// Closed loop with this many requests in flight instead of Poisson arrivals.
    #[arg(long)]
    concurrency: Option<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long)]
    json: Option<PathBuf>,
    /// PNG chart of TTFT p90 and output tokens/s per arm across the rates.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// The switchyard arm's `scheduler:` section as a YAML mapping, e.g.
    /// `{prefixCacheWeight: 5, queueWeight: 3}` (default: Switchyard's defaults).
    #[arg(long)]
    switchyard_scheduler: Option<String>,
}

/// A sibling binary in the same target directory.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found next to switchyard-bench: build it (cargo build --release -p switchyard -p vllm-sim)",
        path.display()
    );
    Ok(path)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Overhead {
            seconds,
            rounds,
            json,
        } => {
            let doc = overhead::run(&sibling("switchyard")?, seconds, rounds).await?;
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Cmd::Compare(args) => compare(args).await,
    }
}

async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let CompareArgs {
        workload,
        rate,
        duration,
        arms,
        concurrency,
        seed,
        json,
        chart,
        switchyard_scheduler,
    } = args;
    let sim = sibling("vllm-sim")?;
    let switchyard = sibling("switchyard")?;
    let workload = Workload::new(workload);
    let rates = if rate.is_empty() {
        vec![workload.default_rate()]
    } else {
        rate
    };
    let arms = if arms.is_empty() {
        ALL_ARMS.to_vec()
    } else {
        arms
    };
    println!(
        "workload {}: {} pods, measured capacity {:.2} req/s; arms: {}",
        workload.name,
        workload.pods.len(),
        workload.capacity_rps,
        arms.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
    );
    let mut results = Vec::new();
    for &rate in &rates {
        let plan = workload.plan(rate, Duration::from_secs(duration), seed);
        println!(
            "\nrate {rate:.2} req/s: {} requests over {duration} s",
            plan.len()
        );
        let mut rows = Vec::new();
        for &arm in &arms {
            let dir = switchyard_testkit::scratch_dir(&format!("bench-{}", arm.name()))?;
            let fleet = fleet::Fleet::start(&sim, &workload, &dir)
                .await
                .context("starting the fleet")?;
            let mut yaml = workload.switchyard_yaml(&fleet.endpoints);
            if let Some(scheduler) = &switchyard_scheduler {
                yaml.push_str(&format!("scheduler: {scheduler}\n"));
            }
            let outcome = match arms::start(arm, &fleet.endpoints, &switchyard, &yaml, &dir).await {
                Err(e) => Err(format!("{e:#}")),
                Ok(running) => {
                    let stop = Arc::new(AtomicBool::new(false));
                    let sampler =
                        tokio::spawn(fleet::sample(fleet.endpoints.clone(), Arc::clone(&stop)));
                    let (outcomes, elapsed) = match concurrency {
                        Some(c) => client::closed_loop(&running.url, &plan, c).await,
                        None => client::open_loop(&running.url, &plan).await,
                    };
                    stop.store(true, Ordering::Relaxed);
                    let samples = sampler.await.unwrap_or_default();
                    Ok(ArmReport::new(&outcomes, elapsed, &samples))
                }
            };
            if let Err(reason) = &outcome {
                eprintln!("{}: skipped: {reason}", arm.name());
            } else {
                eprintln!("{}: done", arm.name());
            }
            rows.push((arm.name().to_string(), outcome));
        }
        print!("{}", report::table(&rows));
        results.push((rate, rows));
    }
    if let Some(path) = &chart {
        let mut series: chart::Series = Vec::new();
        for (rate, rows) in &results {
            for (name, r) in rows {
                if let Ok(r) = r {
                    match series.iter_mut().find(|(n, _)| n == name) {
                        Some((_, pts)) => pts.push((*rate, r.clone())),
                        None => series.push((name.clone(), vec![(*rate, r.clone())])),
                    }
                }
            }
        }
        match chart::draw(path, workload.name, &series) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => eprintln!("no chart: {e:#}"),
        }
    }
    if let Some(path) = json {
        let runs: Vec<_> = results
            .iter()
            .map(|(rate, rows)| {
                let arms: serde_json::Map<String, serde_json::Value> = rows
                    .iter()
                    .map(|(name, r)| {
                        let v = match r {
                            Ok(r) => r.json(),
                            Err(reason) => json!({"skipped": reason}),
                        };
                        (name.clone(), v)
                    })
                    .collect();
                json!({"workload": workload.name, "rate": rate, "arms": arms})
            })
            .collect();
        let doc = if runs.len() == 1 {
            runs[0].clone()
        } else {
            json!(runs)
        };
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
