//! The `switchyard` binary: parse flags, validate the configuration, run until SIGINT/SIGTERM.

use std::io::IsTerminal;

use clap::Parser;
use switchyard::app;
use switchyard::config::{Config, Flags};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let config = match Config::load(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard: configuration error: {e}");
            std::process::exit(2);
        }
    };
    let default_level = match config.verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for log files and collectors.
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    // One thread: the current-thread scheduler runs ready tasks in FIFO order, so the HTTP/2
    // connection task flushes the replies of many ext_proc streams in one write.
    let mut builder = if config.worker_threads == Some(1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if let Some(n) = config.worker_threads {
        builder.worker_threads(n);
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async move {
        tracing::info!(
            pool = %config.pool_name,
            endpoints = config.endpoints.len(),
            models = config.models.len(),
            "starting switchyard"
        );
        app::run(
            config,
            |bound| {
                // One machine-readable line on stdout so scripts and tests can find the ports.
                println!(
                    "switchyard listening grpc={} health={} metrics={}",
                    bound.grpc, bound.health, bound.metrics
                );
            },
            shutdown_signal(),
        )
        .await
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down");
}
