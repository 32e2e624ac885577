//! Stub model servers for the local demo: `--pods N` stand-ins on consecutive ports serving the
//! seed scenario's base model and LoRA adapters, with vLLM-format `/metrics` derived from the
//! requests in flight. (The realistic simulator, vllm-sim, is a separate binary.)

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use switchyard_testkit::StubServer;
use switchyard_testkit::stub::StubOptions;

#[derive(Debug, Parser)]
struct Args {
    /// First port; pod i listens on port + i.
    #[arg(long, default_value_t = 8001)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long, default_value_t = 3)]
    pods: u16,
    #[arg(long, default_value = "meta-llama/Llama-2-7b-hf")]
    model: String,
    /// LoRA adapters every pod serves.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sql-lora,sql-lora-1,sql-lora-2,sql-lora-3,sql-lora-4,tweet-summary,tweet-summary-1,tweet-summary-2,tweet-summary-3,tweet-summary-4"
    )]
    adapters: Vec<String>,
    /// Milliseconds per generated token.
    #[arg(long, default_value_t = 10)]
    token_delay_ms: u64,
    /// Requests served at once; the rest are reported as waiting.
    #[arg(long, default_value_t = 4)]
    max_running: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut pods = Vec::new();
    for i in 0..args.pods {
        let options = StubOptions {
            name: format!("pod-{}", i + 1),
            base_model: args.model.clone(),
            adapters: args.adapters.clone(),
            token_delay: Duration::from_millis(args.token_delay_ms),
            max_running: args.max_running,
        };
        let addr = SocketAddr::new(args.host, args.port + i);
        let pod = StubServer::start_with(options, addr).await?;
        println!("{} serving on {}", pod.name(), pod.addr());
        pods.push(pod);
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
