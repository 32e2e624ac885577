//! Configuration: CLI flags (named as the reference picker's where they exist) plus a YAML file
//! describing the pool, its InferenceModels and the scheduler. Everything is validated into typed
//! values before anything starts; a bad file or flag is a clear error at start-up.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use switchyard_datastore::{Criticality, ModelRoute, RouteError};
use switchyard_scheduler::SchedulerConfig;
use switchyard_scraper::Engine;

/// The embedded default: the seed scenario (three pods on loopback, ten LoRA adapters).
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../deploy/local/switchyard.yaml");

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "LLM-aware endpoint picker for Envoy (ext_proc)"
)]
pub struct Flags {
    /// YAML file with the pool, models and scheduler settings (default: the embedded seed scenario).
    #[arg(long, env = "SWITCHYARD_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// ext_proc gRPC port (0 = any free port, reported on stdout).
    #[arg(long, default_value_t = 9002)]
    pub grpc_port: u16,
    /// gRPC health port.
    #[arg(long, default_value_t = 9003)]
    pub grpc_health_port: u16,
    /// Prometheus metrics port.
    #[arg(long, default_value_t = 9090)]
    pub metrics_port: u16,
    /// Address the three servers bind to.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// How often each endpoint's /metrics is scraped (e.g. 50ms, 1s).
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub refresh_metrics_interval: Duration,
    /// Metrics older than this leave an endpoint out of scoring.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub metrics_staleness_threshold: Duration,
    /// Per-scrape timeout.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub metrics_scrape_timeout: Duration,
    /// Consecutive scrape failures before an endpoint is marked unhealthy.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub metrics_failure_threshold: u32,
    /// Largest request body accepted (bytes); larger bodies get 413.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_request_body_bytes: usize,
    /// Serve gRPC over TLS. Not supported yet: only `false` is accepted.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub secure_serving: bool,
    /// Override the pool name from the config file.
    #[arg(long)]
    pub pool_name: Option<String>,
    /// More logging: -v debug, -vv trace (RUST_LOG overrides).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbosity: u8,
    /// Runtime worker threads; 0 means one per core. Where Switchyard shares a few cores with the
    /// gateway, 1 avoids cross-thread wake-ups (see the README's overhead figures).
    #[arg(long, default_value_t = 0)]
    pub worker_threads: usize,
}

/// Parses Go-style durations as the reference picker's flags take them: `50ms`, `2s`, `1m`, `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit (use ms, s or m)"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration"))?;
    let seconds = match unit {
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("{text:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The YAML file, with the CRDs' field names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    pool: PoolSpec,
    #[serde(default)]
    models: Vec<ModelSpec>,
    #[serde(default)]
    scheduler: SchedulerSpec,
    /// Answer 404 for models without an InferenceModel instead of routing them unchanged.
    #[serde(default, rename = "strictModels")]
    strict_models: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolSpec {
    name: String,
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    engine: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ModelSpec {
    model_name: String,
    #[serde(default)]
    criticality: Option<String>,
    #[serde(default)]
    target_models: Vec<TargetSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetSpec {
    name: String,
    #[serde(default)]
    weight: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SchedulerSpec {
    queue_weight: Option<f64>,
    kv_cache_weight: Option<f64>,
    lora_affinity_weight: Option<f64>,
    prefix_cache_weight: Option<f64>,
    queue_depth_threshold: Option<f64>,
    kv_cache_threshold: Option<f64>,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Yaml {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("pool.endpoints[{index}] {value:?} is not an ip:port address")]
    BadEndpoint { index: usize, value: String },
    #[error("models: {0}")]
    Route(#[from] RouteError),
    #[error("models: modelName {0:?} appears twice")]
    DuplicateModel(String),
    #[error("models[{model}].criticality {value:?} must be Critical, Standard or Sheddable")]
    BadCriticality { model: String, value: String },
    #[error("pool.engine: {0}")]
    BadEngine(String),
    #[error("scheduler.{0} must be a finite number >= 0")]
    BadWeight(&'static str),
    #[error("scheduler.{0} must be > 0")]
    BadThreshold(&'static str),
    #[error("--secure-serving=true is not supported yet; pass --secure-serving=false")]
    TlsUnsupported,
    #[error("pool.name must not be empty")]
    EmptyPoolName,
}

/// The validated configuration the rest of the program runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub pool_name: String,
    pub endpoints: Vec<SocketAddr>,
    pub engine: Engine,
    pub models: Vec<ModelRoute>,
    pub strict_models: bool,
    pub scheduler: SchedulerConfig,
    pub grpc_addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
    pub scrape_failure_threshold: u32,
    pub max_request_body_bytes: usize,
    pub verbosity: u8,
    /// `None`: one per core.
    pub worker_threads: Option<usize>,
}

impl Config {
    /// Reads the file named by the flags (or the embedded default) and validates everything.
    pub fn load(flags: &Flags) -> Result<Self, ConfigError> {
        let (origin, text) = match &flags.config_file {
            Some(path) => (
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => (
                "<embedded default>".to_string(),
                DEFAULT_CONFIG_YAML.to_string(),
            ),
        };
        Self::from_yaml(flags, &origin, &text)
    }

    pub fn from_yaml(flags: &Flags, origin: &str, text: &str) -> Result<Self, ConfigError> {
        if flags.secure_serving {
            return Err(ConfigError::TlsUnsupported);
        }
        let file: FileConfig = serde_yaml::from_str(text).map_err(|source| ConfigError::Yaml {
            path: origin.to_string(),
            source,
        })?;
        let pool_name = flags.pool_name.clone().unwrap_or(file.pool.name);
        if pool_name.trim().is_empty() {
            return Err(ConfigError::EmptyPoolName);
        }
        let endpoints = file
            .pool
            .endpoints
            .iter()
            .enumerate()
            .map(|(index, value)| {
                value.parse().map_err(|_| ConfigError::BadEndpoint {
                    index,
                    value: value.clone(),
                })
            })
            .collect::<Result<Vec<SocketAddr>, _>>()?;
        let engine = match &file.pool.engine {
            Some(e) => e.parse().map_err(ConfigError::BadEngine)?,
            None => Engine::Vllm,
        };

        let mut models = Vec::with_capacity(file.models.len());
        for spec in file.models {
            if models
                .iter()
                .any(|m: &ModelRoute| m.model_name() == spec.model_name)
            {
                return Err(ConfigError::DuplicateModel(spec.model_name));
            }
            let criticality = match spec.criticality.as_deref() {
                None | Some("Standard") => Criticality::Standard,
                Some("Critical") => Criticality::Critical,
                Some("Sheddable") => Criticality::Sheddable,
                Some(other) => {
                    return Err(ConfigError::BadCriticality {
                        model: spec.model_name,
                        value: other.to_string(),
                    });
                }
            };
            let targets = spec
                .target_models
                .into_iter()
                .map(|t| (t.name, t.weight))
                .collect();
            models.push(ModelRoute::new(spec.model_name, criticality, targets)?);
        }

        let defaults = SchedulerConfig::default();
        let s = &file.scheduler;
        let weight = |v: Option<f64>, d: f64, name| match v {
            Some(w) if !w.is_finite() || w < 0.0 => Err(ConfigError::BadWeight(name)),
            Some(w) => Ok(w),
            None => Ok(d),
        };
        let threshold = |v: Option<f64>, d: f64, name| match v {
            Some(t) if !t.is_finite() || t <= 0.0 => Err(ConfigError::BadThreshold(name)),
            Some(t) => Ok(t),
            None => Ok(d),
        };
        let scheduler = SchedulerConfig {
            queue_weight: weight(s.queue_weight, defaults.queue_weight, "queueWeight")?,
            kv_cache_weight: weight(s.kv_cache_weight, defaults.kv_cache_weight, "kvCacheWeight")?,
            lora_affinity_weight: weight(
                s.lora_affinity_weight,
                defaults.lora_affinity_weight,
                "loraAffinityWeight",
            )?,
            prefix_cache_weight: weight(
                s.prefix_cache_weight,
                defaults.prefix_cache_weight,
                "prefixCacheWeight",
            )?,
            queue_depth_threshold: threshold(
                s.queue_depth_threshold,
                defaults.queue_depth_threshold,
                "queueDepthThreshold",
            )?,
            kv_cache_threshold: threshold(
                s.kv_cache_threshold,
                defaults.kv_cache_threshold,
                "kvCacheThreshold",
            )?,
            metrics_staleness: flags.metrics_staleness_threshold,
        };

        Ok(Config {
            pool_name,
            endpoints,
            engine,
            models,
            strict_models: file.strict_models,
            scheduler,
            grpc_addr: SocketAddr::new(flags.bind_address, flags.grpc_port),
            health_addr: SocketAddr::new(flags.bind_address, flags.grpc_health_port),
            metrics_addr: SocketAddr::new(flags.bind_address, flags.metrics_port),
            scrape_interval: flags.refresh_metrics_interval,
            scrape_timeout: flags.metrics_scrape_timeout,
            scrape_failure_threshold: flags.metrics_failure_threshold,
            max_request_body_bytes: flags.max_request_body_bytes,
            verbosity: flags.verbosity,
            worker_threads: (flags.worker_threads > 0).then_some(flags.worker_threads),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("switchyard").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn embedded_default_is_the_seed_scenario() {
        let cfg = Config::load(&flags(&[])).unwrap();
        assert_eq!(cfg.pool_name, "vllm-llama2-7b-pool");
        assert_eq!(cfg.endpoints.len(), 3);
        assert!(cfg.models.iter().any(|m| m.model_name() == "tweet-summary"));
        assert_eq!(cfg.grpc_addr.port(), 9002);
        assert_eq!(cfg.health_addr.port(), 9003);
        assert_eq!(cfg.metrics_addr.port(), 9090);
        assert_eq!(cfg.scrape_interval, Duration::from_millis(50));
        assert_eq!(cfg.scheduler.metrics_staleness, Duration::from_secs(2));
        assert_eq!(
            cfg.worker_threads, None,
            "one runtime thread per core by default"
        );
        let one = Config::load(&flags(&["--worker-threads", "1"])).unwrap();
        assert_eq!(one.worker_threads, Some(1));
    }

    #[test]
    fn reference_flags_parse() {
        let f = flags(&[
            "--grpc-port",
            "19002",
            "--refresh-metrics-interval",
            "100ms",
            "--metrics-staleness-threshold=1.5s",
            "--secure-serving=false",
            "-vv",
        ]);
        assert_eq!(f.grpc_port, 19002);
        assert_eq!(f.refresh_metrics_interval, Duration::from_millis(100));
        assert_eq!(f.metrics_staleness_threshold, Duration::from_millis(1500));
        assert!(!f.secure_serving);
        assert_eq!(f.verbosity, 2);
        assert!(Flags::try_parse_from(["switchyard", "--refresh-metrics-interval", "50"]).is_err());
        assert!(Flags::try_parse_from(["switchyard", "--grpc-port", "70000"]).is_err());
        assert!(Flags::try_parse_from(["switchyard", "--no-such-flag"]).is_err());
        assert!(matches!(
            Config::load(&flags(&["--secure-serving"])),
            Err(ConfigError::TlsUnsupported)
        ));
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let f = flags(&[]);
        let cases: &[(&str, &str)] = &[
            ("pool: {name: p, endpoints: [nope]}", "is not an ip:port"),
            ("pool: {name: p}\nmodlz: []", "unknown field `modlz`"),
            (
                "pool: {name: p}\nmodels: [{modelName: a}, {modelName: a}]",
                "appears twice",
            ),
            (
                "pool: {name: p}\nmodels: [{modelName: a, criticality: Urgent}]",
                "must be Critical, Standard or Sheddable",
            ),
            (
                "pool: {name: p}\nmodels: [{modelName: a, targetModels: [{name: x, weight: 1}, {name: y}]}]",
                "weights must be set for all",
            ),
            ("pool: {name: p, engine: tgi}", "unknown engine"),
            (
                "pool: {name: p}\nscheduler: {queueWeight: -1}",
                "queueWeight",
            ),
            (
                "pool: {name: p}\nscheduler: {kvCacheThreshold: 0}",
                "kvCacheThreshold",
            ),
            ("pool: {name: ''}", "pool.name"),
            ("[]", "invalid type"),
        ];
        for (yaml, want) in cases {
            let err = Config::from_yaml(&f, "test.yaml", yaml)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("ms").is_err());
    }
}
