//! The real vLLM 0.32 pages parse into the right values, checked against a general-purpose
//! Prometheus parser (prometheus-parse) as an independent oracle.

use std::time::Instant;

use prometheus_parse::{Scrape, Value};
use switchyard_datastore::{CacheInfo, LoraState};
use switchyard_scraper::{Engine, parse_page};

const IDLE: &str = include_str!("fixtures/vllm-0.32-metrics-idle.txt");
const LOADED: &str = include_str!("fixtures/vllm-0.32-metrics-loaded.txt");

/// prometheus-parse's name pattern is `\w+`: it silently skips every `vllm:` series (one reason the
/// picker has its own reader). The oracle therefore reads the page with `vllm:` renamed `vllm_`.
fn oracle(page: &str) -> Scrape {
    let renamed = page.replace("vllm:", "vllm_");
    Scrape::parse(renamed.lines().map(|l| Ok(l.to_string()))).expect("oracle parses the page")
}

fn gauge(scrape: &Scrape, name: &str) -> f64 {
    assert!(
        scrape.samples.iter().any(|s| s.metric == name),
        "oracle has no {name}"
    );
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match s.value {
            Value::Gauge(v) | Value::Untyped(v) | Value::Counter(v) => v,
            _ => panic!("{name} is not a scalar"),
        })
        .sum()
}

#[test]
fn loaded_page_matches_oracle_and_known_values() {
    let m = parse_page(LOADED, Engine::Vllm, Instant::now()).unwrap();
    let o = oracle(LOADED);
    assert_eq!(f64::from(m.waiting), gauge(&o, "vllm_num_requests_waiting"));
    assert_eq!(f64::from(m.running), gauge(&o, "vllm_num_requests_running"));
    assert_eq!(m.kv_usage, gauge(&o, "vllm_kv_cache_usage_perc"));
    // Known values of this page.
    assert_eq!((m.waiting, m.running), (2, 8));
    assert!((m.kv_usage - 0.7272727272727273).abs() < 1e-12);
    assert_eq!(
        m.cache,
        Some(CacheInfo {
            block_size: 128,
            num_gpu_blocks: 12
        })
    );

    // lora_requests_info: the value is a timestamp and the largest one is the current state.
    // (prometheus-parse splits label values at commas, so the raw line is checked instead.)
    let newest_line = LOADED
        .lines()
        .filter(|l| l.starts_with("vllm:lora_requests_info{"))
        .max_by(|a, b| {
            let v = |l: &str| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
            v(a).total_cmp(&v(b))
        })
        .unwrap();
    assert!(newest_line.contains(r#"running_lora_adapters="lora2,lora1""#));
    let want = LoraState {
        max_lora: 2,
        running: vec!["lora2".into(), "lora1".into()],
        waiting: vec!["lora2".into(), "lora1".into()],
    };
    assert_eq!(m.lora, Some(want));
}

#[test]
fn idle_page() {
    let m = parse_page(IDLE, Engine::Vllm, Instant::now()).unwrap();
    assert_eq!((m.waiting, m.running, m.kv_usage), (0, 0, 0.0));
    assert_eq!(m.lora, None);
    assert_eq!(m.cache.map(|c| c.num_gpu_blocks), Some(12));
}

#[test]
fn wrong_engine_finds_no_load_metrics() {
    assert!(parse_page(LOADED, Engine::Sglang, Instant::now()).is_err());
}
