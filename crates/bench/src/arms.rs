//! The arms of a comparison: what sits between the load generator and the pods.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use switchyard_testkit::{EnvoyProcess, SwitchyardProcess, free_port};

use crate::envoy_config;

const STANDARD_ENVOY: &str = include_str!("../../../deploy/local/envoy.yaml");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    EnvoyRoundRobin,
    EnvoyLeastRequest,
    Switchyard,
    VllmRouterCacheAware,
    VllmRouterPowerOfTwo,
    SglangRouterCacheAware,
}

pub const ALL_ARMS: [Arm; 6] = [
    Arm::EnvoyRoundRobin,
    Arm::EnvoyLeastRequest,
    Arm::Switchyard,
    Arm::VllmRouterCacheAware,
    Arm::VllmRouterPowerOfTwo,
    Arm::SglangRouterCacheAware,
];

impl Arm {
    pub fn name(self) -> &'static str {
        match self {
            Arm::EnvoyRoundRobin => "envoy-round-robin",
            Arm::EnvoyLeastRequest => "envoy-least-request",
            Arm::Switchyard => "switchyard",
            Arm::VllmRouterCacheAware => "vllm-router-cache-aware",
            Arm::VllmRouterPowerOfTwo => "vllm-router-power-of-two",
            Arm::SglangRouterCacheAware => "sglang-router-cache-aware",
        }
    }
}

impl std::str::FromStr for Arm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_ARMS.into_iter().find(|a| a.name() == s).ok_or_else(|| {
            let names: Vec<_> = ALL_ARMS.iter().map(|a| a.name()).collect();
            format!("unknown arm {s:?} (one of {})", names.join(", "))
        })
    }
}

/// A started arm; everything it started stops when it is dropped.
pub struct RunningArm {
    pub url: String,
    _envoy: Option<EnvoyProcess>,
    _switchyard: Option<SwitchyardProcess>,
    _router: Option<ChildGuard>,
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The workspace root (for `.venv-tools`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Installs the peer routers from PyPI into `.venv-tools` (once) and returns the bin directory.
fn peer_router_bin() -> anyhow::Result<PathBuf> {
    let venv = root().join(".venv-tools");
    let bin = venv.join("bin");
    if bin.join("vllm-router").exists() && bin.join("sglang-router").exists() {
        return Ok(bin);
    }
    if !bin.join("pip").exists() {
        let ok = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()?
            .success();
        if !ok {
            bail!("python3 -m venv failed");
        }
    }
    let out = Command::new(bin.join("pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "vllm-router==0.1.17",
            "sglang-router==0.3.2",
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "pip install of the peer routers failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(bin)
}

async fn wait_http_ok(url: &str, child: &mut Child, log: &Path) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String = text
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!("exited ({status}): {tail}");
        }
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("not ready after 60 s")
}

/// Starts `arm` in front of `pods`.
pub async fn start(
    arm: Arm,
    pods: &[String],
    switchyard_bin: &Path,
    switchyard_yaml: &str,
    dir: &Path,
) -> anyhow::Result<RunningArm> {
    match arm {
        Arm::EnvoyRoundRobin | Arm::EnvoyLeastRequest => {
            let policy = if arm == Arm::EnvoyRoundRobin {
                "ROUND_ROBIN"
            } else {
                "LEAST_REQUEST"
            };
            let envoy =
                EnvoyProcess::start(&envoy_config::static_cluster(pods, policy), 0, dir).await?;
            Ok(RunningArm {
                url: envoy.url(),
                _envoy: Some(envoy),
                _switchyard: None,
                _router: None,
            })
        }
        Arm::Switchyard => {
            let mut sy =
                SwitchyardProcess::start_logging(switchyard_bin, switchyard_yaml, &[], dir, false)?;
            sy.wait_ready_pods(pods.len()).await?;
            let envoy = EnvoyProcess::start(STANDARD_ENVOY, sy.grpc.port(), dir).await?;
            Ok(RunningArm {
                url: envoy.url(),
                _envoy: Some(envoy),
                _switchyard: Some(sy),
                _router: None,
            })
        }
        Arm::VllmRouterCacheAware | Arm::VllmRouterPowerOfTwo | Arm::SglangRouterCacheAware => {
            let bin = peer_router_bin()?;
            let port = free_port()?;
            let prom = free_port()?;
            let workers: Vec<String> = pods.iter().map(|p| format!("http://{p}")).collect();
            let (program, policy, launch) = match arm {
                Arm::VllmRouterCacheAware => ("vllm-router", "cache_aware", false),
                Arm::VllmRouterPowerOfTwo => ("vllm-router", "power_of_two", false),
                _ => ("sglang-router", "cache_aware", true),
            };
            let log_path = dir.join(format!("{program}.log"));
            let log = std::fs::File::create(&log_path)?;
            let mut cmd = Command::new(bin.join(program));
            if launch {
                cmd.arg("launch");
            }
            let child = cmd
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--worker-urls",
                ])
                .args(&workers)
                .args([
                    "--policy",
                    policy,
                    "--prometheus-host",
                    "127.0.0.1",
                    "--prometheus-port",
                    &prom.to_string(),
                ])
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .spawn()
                .with_context(|| format!("starting {program}"))?;
            let mut guard = ChildGuard(child);
            let url = format!("http://127.0.0.1:{port}");
            wait_http_ok(&format!("{url}/health"), &mut guard.0, &log_path).await?;
            Ok(RunningArm {
                url,
                _envoy: None,
                _switchyard: None,
                _router: Some(guard),
            })
        }
    }
}
