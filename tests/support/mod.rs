//! A full local stack per test: stub model servers, the real Switchyard binary and a real Envoy
//! 1.40 with one of the repo's configs (standard FULL_DUPLEX_STREAMED, the same without response
//! phases, or the older BUFFERED).
#![allow(dead_code)] // each test file uses a different part of this module

use std::path::Path;

use switchyard_testkit::{EnvoyProcess, StubMetrics, StubServer, SwitchyardProcess, scratch_dir};

pub const STANDARD_ENVOY: &str = include_str!("../../deploy/local/envoy.yaml");
pub const BUFFERED_ENVOY: &str = include_str!("../../deploy/local/envoy-buffered.yaml");
pub const REQUEST_ONLY_ENVOY: &str = include_str!("../../deploy/local/envoy-request-only.yaml");

/// Which repo Envoy config a stack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// envoy.yaml: the reference wiring, request and response phases.
    FullDuplex,
    /// envoy-request-only.yaml: FULL_DUPLEX_STREAMED request, no response phases.
    RequestOnly,
    /// envoy-buffered.yaml: the older BUFFERED request-only wiring.
    Buffered,
}

pub const ALL_MODES: [Mode; 3] = [Mode::FullDuplex, Mode::RequestOnly, Mode::Buffered];

impl Mode {
    fn envoy_config(self) -> &'static str {
        match self {
            Mode::FullDuplex => STANDARD_ENVOY,
            Mode::RequestOnly => REQUEST_ONLY_ENVOY,
            Mode::Buffered => BUFFERED_ENVOY,
        }
    }
}

pub struct Stack {
    pub pods: Vec<StubServer>,
    pub switchyard: SwitchyardProcess,
    pub envoy: EnvoyProcess,
    pub client: reqwest::Client,
}

/// The models section used unless a test brings its own.
pub const DEFAULT_MODELS: &str = r#"
models:
  - modelName: tweet-summary
    criticality: Critical
    targetModels:
      - {name: tweet-summary-1, weight: 80}
      - {name: tweet-summary-2, weight: 20}
  - modelName: batch
    criticality: Sheddable
"#;

pub struct StackBuilder {
    pods: usize,
    mode: Mode,
    models: String,
    extra_yaml: String,
    args: Vec<String>,
    extra_endpoints: Vec<String>,
}

impl StackBuilder {
    pub fn new(pods: usize, mode: Mode) -> Self {
        Self {
            pods,
            mode,
            models: DEFAULT_MODELS.to_string(),
            extra_yaml: String::new(),
            args: Vec::new(),
            extra_endpoints: Vec::new(),
        }
    }

    pub fn models(mut self, yaml: &str) -> Self {
        self.models = yaml.to_string();
        self
    }

    pub fn yaml(mut self, extra: &str) -> Self {
        self.extra_yaml.push_str(extra);
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// Adds endpoints that are not stub pods (e.g. dead addresses).
    pub fn extra_endpoint(mut self, addr: &str) -> Self {
        self.extra_endpoints.push(addr.to_string());
        self
    }

    pub async fn start(self) -> Stack {
        let dir = scratch_dir("e2e").expect("scratch dir");
        let mut pods = Vec::new();
        for i in 0..self.pods {
            pods.push(
                StubServer::start(&format!("pod-{}", i + 1))
                    .await
                    .expect("stub pod"),
            );
        }
        // Quiet, equal, realistic load until a test says otherwise.
        for p in &pods {
            p.set_metrics(Some(idle()));
        }
        let mut endpoints: Vec<String> = pods.iter().map(|p| format!("\"{}\"", p.addr())).collect();
        endpoints.extend(self.extra_endpoints.iter().map(|e| format!("\"{e}\"")));
        let yaml = format!(
            "pool:\n  name: test-pool\n  endpoints: [{}]\n{}\n{}",
            endpoints.join(", "),
            self.models,
            self.extra_yaml
        );
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut switchyard = SwitchyardProcess::start(
            Path::new(env!("CARGO_BIN_EXE_switchyard")),
            &yaml,
            &args,
            &dir,
        )
        .expect("switchyard starts");
        if !pods.is_empty() {
            switchyard
                .wait_ready_pods(pods.len())
                .await
                .expect("switchyard sees the pods");
        }
        let envoy = EnvoyProcess::start(self.mode.envoy_config(), switchyard.grpc.port(), &dir)
            .await
            .expect("envoy starts");
        Stack {
            pods,
            switchyard,
            envoy,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(16)
                .build()
                .expect("client"),
        }
    }
}

/// Equal, moderate load: nothing waiting, 30 running, KV 30%.
pub fn idle() -> StubMetrics {
    StubMetrics {
        waiting: 0,
        running: 30,
        kv_usage: 0.3,
        max_lora: 4,
        running_adapters: vec![],
    }
}

pub struct Reply {
    pub status: u16,
    pub served_by: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Stack {
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.send(
            self.client
                .post(format!("{}{path}", self.envoy.url()))
                .body(body),
        )
        .await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}\nenvoy log:\n{}", self.envoy.log()));
        let status = response.status().as_u16();
        let served_by = response
            .headers()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.bytes().await.expect("response body").to_vec();
        Reply {
            status,
            served_by,
            body,
        }
    }

    /// Sets fixed metrics on every pod and waits until Switchyard's pool gauges show them.
    pub async fn set_pod_metrics(&self, metrics: &[StubMetrics]) {
        for (pod, m) in self.pods.iter().zip(metrics) {
            pod.set_metrics(Some(m.clone()));
        }
        for _ in 0..400 {
            let page = self.switchyard.metrics_page().await.unwrap_or_default();
            let all_seen = self.pods.iter().zip(metrics).all(|(pod, m)| {
                let line = format!("model_server_pod=\"{}\"}} {}", pod.addr(), m.waiting);
                page.contains(&line)
            });
            if all_seen {
                // The queue gauge is published with the rest of the scrape; one more scrape
                // interval makes sure every pod's latest page (KV, LoRA) is in.
                tokio::time::sleep(std::time::Duration::from_millis(120)).await;
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("switchyard never saw the new metrics");
    }

    pub fn pod_name_of(&self, index: usize) -> String {
        self.pods[index].name().to_string()
    }
}

pub fn completion(model: &str) -> String {
    format!(
        r#"{{"model":"{model}","prompt":"Write as if you were a critic: San Francisco","max_tokens":4}}"#
    )
}
