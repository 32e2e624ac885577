//! The Switchyard binary as a child process, with its ports bound at 0 and read back from the
//! one line it prints on stdout.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir(label: &str) -> anyhow::Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "switchyard-{label}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A free loopback port for a child process that only takes a port number. The listener is
/// dropped before the child binds: a small race, acceptable for tests and the harness.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running Switchyard; killed when dropped.
#[derive(Debug)]
pub struct SwitchyardProcess {
    child: Child,
    pub grpc: SocketAddr,
    pub health: SocketAddr,
    pub metrics: SocketAddr,
    pub log_path: PathBuf,
}

impl Drop for SwitchyardProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SwitchyardProcess {
    /// Starts `binary` with `config_yaml` written to `dir`, on loopback ports chosen by the OS,
    /// logging at debug level (tests print the log when they fail).
    pub fn start(
        binary: &Path,
        config_yaml: &str,
        extra_args: &[&str],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_logging(binary, config_yaml, extra_args, dir, true)
    }

    /// As [`SwitchyardProcess::start`], at the default (info) log level when `debug_log` is
    /// false: what benchmarks run, since a debug line per request costs measurable CPU.
    pub fn start_logging(
        binary: &Path,
        config_yaml: &str,
        extra_args: &[&str],
        dir: &Path,
        debug_log: bool,
    ) -> anyhow::Result<Self> {
        let config_path = dir.join("switchyard.yaml");
        std::fs::write(&config_path, config_yaml)?;
        let log_path = dir.join("switchyard.log");
        let log = std::fs::File::create(&log_path)?;
        let mut child = Command::new(binary)
            .arg("--config-file")
            .arg(&config_path)
            .args([
                "--bind-address",
                "127.0.0.1",
                "--grpc-port",
                "0",
                "--grpc-health-port",
                "0",
                "--metrics-port",
                "0",
            ])
            .args(debug_log.then_some("-v"))
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting switchyard")?;
        let stdout = child.stdout.take().context("switchyard stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let field = |key: &str| -> anyhow::Result<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .with_context(|| {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    format!("switchyard printed {line:?}, log:\n{log}")
                })?
                .parse()
                .context("bad address")
        };
        Ok(Self {
            grpc: field("grpc=")?,
            health: field("health=")?,
            metrics: field("metrics=")?,
            child,
            log_path: log_path.clone(),
        })
    }

    /// Switchyard's own `/metrics` page.
    pub async fn metrics_page(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(format!("http://{}/metrics", self.metrics))
            .await?
            .text()
            .await?)
    }

    /// Waits until `inference_pool_ready_pods` reports `pods` endpoints with fresh metrics.
    pub async fn wait_ready_pods(&mut self, pods: usize) -> anyhow::Result<()> {
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait()? {
                bail!("switchyard exited ({status}):\n{}", self.log());
            }
            if let Ok(page) = self.metrics_page().await {
                let ready = page
                    .lines()
                    .find(|l| l.starts_with("inference_pool_ready_pods{"))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse::<usize>().ok());
                if ready == Some(pods) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("switchyard never saw {pods} ready pods:\n{}", self.log())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}
