//! `vllm-sim`: serves one or more simulated vLLM pods. Flags are named as vLLM's where vLLM has
//! them; `--gpu`, `--model-profile`, `--speed`, `--pods`, `--metrics-flavor` and `--seed` are the
//! simulator's own.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use clap::Parser;
use vllm_sim::cost::{Calibration, CostModel};
use vllm_sim::engine::EngineConfig;
use vllm_sim::metrics::MetricsFlavor;
use vllm_sim::profile::{GpuProfile, ModelProfile};
use vllm_sim::server::{Pod, PodConfig};

#[derive(Debug, Parser)]
#[command(
    name = "vllm-sim",
    version,
    about = "A vLLM-compatible model-server simulator"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port of the first pod; pod i listens on port + i.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Model name (also picks the model profile when it names a known model).
    #[arg(long, default_value = "meta-llama/Llama-2-7b-hf")]
    model: String,
    /// Names the API accepts for the base model (default: --model).
    #[arg(long, num_args = 1..)]
    served_model_name: Vec<String>,
    #[arg(long, default_value_t = 256)]
    max_num_seqs: u32,
    #[arg(long, default_value_t = 2048)]
    max_num_batched_tokens: u32,
    /// Default: the model profile's context length.
    #[arg(long)]
    max_model_len: Option<u32>,
    #[arg(long, default_value_t = 16)]
    block_size: u32,
    #[arg(long)]
    num_gpu_blocks_override: Option<u32>,
    #[arg(long, default_value_t = 0.9)]
    gpu_memory_utilization: f64,
    #[arg(long)]
    enable_lora: bool,
    #[arg(long, default_value_t = 1)]
    max_loras: u32,
    /// Default: --max-loras.
    #[arg(long)]
    max_cpu_loras: Option<u32>,
    #[arg(long, default_value_t = 16)]
    max_lora_rank: u32,
    /// Adapters as name=path (the path is recorded, not read).
    #[arg(long, num_args = 1..)]
    lora_modules: Vec<String>,
    #[arg(long, overrides_with = "no_enable_prefix_caching")]
    enable_prefix_caching: bool,
    #[arg(long)]
    no_enable_prefix_caching: bool,
    /// GPU profile: A10, L4, A100-80GB, A100-40GB, H100.
    #[arg(long, default_value = "A100-80GB")]
    gpu: GpuProfile,
    /// Model profile when --model does not name one: Llama-2-7B, Llama-3-8B, Qwen2.5-32B.
    #[arg(long)]
    model_profile: Option<ModelProfile>,
    /// Virtual seconds per real second (e.g. 10 runs ten times faster than the GPU would).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Pods hosted by this process, on consecutive ports.
    #[arg(long, default_value_t = 1)]
    pods: u16,
    /// Metric names: vllm, vllm-legacy (gpu_cache_usage_perc) or sglang.
    #[arg(long, default_value = "vllm")]
    metrics_flavor: MetricsFlavor,
    /// Seed of the generated text.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn pod_configs(args: &Args) -> anyhow::Result<Vec<PodConfig>> {
    let model = match args.model_profile {
        Some(m) => m,
        None => args
            .model
            .parse::<ModelProfile>()
            .map_err(anyhow::Error::msg)
            .context("--model does not name a known model; pass --model-profile")?,
    };
    if !(args.speed > 0.0 && args.speed.is_finite()) {
        bail!("--speed must be a positive number");
    }
    if !(0.0..=1.0).contains(&args.gpu_memory_utilization) {
        bail!("--gpu-memory-utilization must be in (0, 1]");
    }
    let cost = CostModel::new(model, args.gpu, Calibration::default(), args.max_lora_rank);
    let num_gpu_blocks = match args.num_gpu_blocks_override {
        Some(n) => n,
        None => u32::try_from(cost.kv_blocks(args.gpu_memory_utilization, args.block_size))?,
    };
    if num_gpu_blocks == 0 {
        bail!(
            "{} does not fit on {} at --gpu-memory-utilization {}",
            model.name,
            args.gpu.name,
            args.gpu_memory_utilization
        );
    }
    let mut lora_modules = Vec::new();
    for m in &args.lora_modules {
        let (name, path) = m.split_once('=').unwrap_or((m.as_str(), m.as_str()));
        lora_modules.push((name.to_string(), path.to_string()));
    }
    if !lora_modules.is_empty() && !args.enable_lora {
        bail!("--lora-modules needs --enable-lora");
    }
    let engine = EngineConfig {
        cost,
        max_num_seqs: args.max_num_seqs,
        max_num_batched_tokens: args.max_num_batched_tokens,
        max_model_len: args.max_model_len.unwrap_or(model.max_model_len),
        block_size: args.block_size,
        num_gpu_blocks,
        enable_prefix_caching: !args.no_enable_prefix_caching,
        max_loras: if args.enable_lora {
            args.max_loras.max(1)
        } else {
            0
        },
        max_cpu_loras: args.max_cpu_loras.unwrap_or(args.max_loras),
    };
    let served = args
        .served_model_name
        .first()
        .cloned()
        .unwrap_or_else(|| args.model.clone());
    Ok((0..args.pods)
        .map(|i| PodConfig {
            name: String::new(), // the bound address

            served_model_name: served.clone(),
            engine: engine.clone(),
            speed: args.speed,
            flavor: args.metrics_flavor,
            gpu_memory_utilization: args.gpu_memory_utilization,
            num_gpu_blocks_override: args.num_gpu_blocks_override,
            enable_lora: args.enable_lora,
            lora_modules: lora_modules.clone(),
            seed: args.seed.wrapping_add(u64::from(i)),
        })
        .collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let configs = match pod_configs(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vllm-sim: {e:#}");
            std::process::exit(2);
        }
    };
    let mut pods = Vec::new();
    for (i, config) in configs.into_iter().enumerate() {
        let blocks = config.engine.num_gpu_blocks;
        // Port 0 binds any free port (read the address from this line); else consecutive ports.
        let port = if args.port == 0 {
            0
        } else {
            args.port + i as u16
        };
        let addr = SocketAddr::new(args.host, port);
        let pod = Pod::start(config, addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        println!(
            "vllm-sim pod {} on {} ({} on {}, {} KV blocks of {} tokens)",
            pod.name(),
            pod.addr(),
            args.model,
            args.gpu.name,
            blocks,
            args.block_size
        );
        pods.push(pod);
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
