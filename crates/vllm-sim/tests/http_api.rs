//! The simulator over HTTP: LoRA slot limits visible in `lora_requests_info`, prefix-cache hits,
//! the metrics page against the real vLLM 0.32 page, the picker's parser on the simulator's page,
//! errors, adapters, and the alternative metric flavors.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_scraper::{Engine as ScrapeEngine, parse_page};
use vllm_sim::engine::EngineConfig;
use vllm_sim::metrics::MetricsFlavor;
use vllm_sim::profile::{A10, A100_80GB, GpuProfile, LLAMA_2_7B};
use vllm_sim::server::{Pod, PodConfig};

const FIXTURE: &str = include_str!("../../scraper/tests/fixtures/vllm-0.32-metrics-loaded.txt");
const MODEL: &str = "meta-llama/Llama-2-7b-hf";

fn pod_config(gpu: GpuProfile, max_loras: u32, speed: f64, flavor: MetricsFlavor) -> PodConfig {
    PodConfig {
        name: "sim-0".into(),
        served_model_name: MODEL.into(),
        engine: EngineConfig {
            max_loras,
            max_cpu_loras: 4,
            ..EngineConfig::vllm_defaults(LLAMA_2_7B, gpu)
        },
        speed,
        flavor,
        gpu_memory_utilization: 0.9,
        num_gpu_blocks_override: None,
        enable_lora: max_loras > 0,
        lora_modules: vec![
            ("lora-a".into(), "/a".into()),
            ("lora-b".into(), "/b".into()),
        ],
        seed: 7,
    }
}

async fn start(config: PodConfig) -> (Pod, String) {
    let pod = Pod::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}", pod.addr());
    (pod, url)
}

async fn page(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn value(page: &str, prefix: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{prefix} not on page"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_adapter_waits_with_one_lora_slot() {
    let (_pod, url) = start(pod_config(A10, 1, 20.0, MetricsFlavor::Vllm)).await;
    let client = reqwest::Client::new();
    let long = |model: &str| {
        client
            .post(format!("{url}/v1/completions"))
            .json(&json!({"model": model, "prompt": "hello there", "max_tokens": 300}))
            .send()
    };
    let first = tokio::spawn(long("lora-a"));
    // Wait until lora-a runs, then ask for lora-b.
    for _ in 0..200 {
        if value(&page(&url).await, "vllm:num_requests_running{") >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = tokio::spawn(long("lora-b"));
    let mut seen = false;
    for _ in 0..200 {
        let p = page(&url).await;
        let newest = p
            .lines()
            .filter(|l| l.starts_with("vllm:lora_requests_info{"))
            .max_by(|a, b| {
                let v = |l: &str| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
                v(a).total_cmp(&v(b))
            })
            .unwrap_or_default()
            .to_string();
        if value(&p, "vllm:num_requests_waiting{") == 1.0
            && newest.contains("running_lora_adapters=\"lora-a\"")
            && newest.contains("waiting_lora_adapters=\"lora-a,lora-b\"")
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        seen,
        "lora-b never showed as waiting behind lora-a:\n{}",
        page(&url).await
    );
    for h in [first, second] {
        let r = h.await.unwrap().unwrap();
        assert_eq!(r.status(), 200);
    }
    let p = page(&url).await;
    assert_eq!(
        value(
            &p,
            "vllm:request_success_total{engine=\"0\",finished_reason=\"length\""
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_long_prompt_hits_the_prefix_cache() {
    let (_pod, url) = start(pod_config(A100_80GB, 0, 1.0, MetricsFlavor::Vllm)).await;
    let client = reqwest::Client::new();
    let prompt: String = (0..2000).map(|i| format!("w{:03}", i % 1000)).collect(); // 8,000 bytes = 2,000 tokens
    let mut ttfts = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..2 {
        let before = value(&page(&url).await, "vllm:time_to_first_token_seconds_sum");
        let r: Value = client
            .post(format!("{url}/v1/completions"))
            .json(&json!({"model": MODEL, "prompt": prompt, "max_tokens": 1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["usage"]["prompt_tokens"], 2000);
        cached.push(
            r["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap(),
        );
        let after = value(&page(&url).await, "vllm:time_to_first_token_seconds_sum");
        ttfts.push(after - before);
    }
    assert_eq!(
        cached,
        vec![0, 1984],
        "all full blocks but the last are reused"
    );
    assert!(ttfts[1] < ttfts[0] / 3.0, "TTFT {ttfts:?}");
    let p = page(&url).await;
    assert_eq!(value(&p, "vllm:prefix_cache_hits_total"), 1984.0);
    assert_eq!(value(&p, "vllm:prefix_cache_queries_total"), 4000.0);
}

/// Metric name -> label keys, for every sample line of a page.
fn label_keys(page: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i + 1..line.rfind('}').unwrap()]),
            None => (line.split(' ').next().unwrap(), ""),
        };
        let mut keys = BTreeSet::new();
        let mut in_quotes = false;
        let mut key = String::new();
        for c in rest.chars() {
            match c {
                '"' => in_quotes = !in_quotes,
                '=' if !in_quotes => {
                    keys.insert(key.trim_start_matches(',').to_string());
                    key.clear();
                }
                _ if !in_quotes => key.push(c),
                _ => {}
            }
        }
        out.entry(name.to_string()).or_default().extend(keys);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_page_matches_real_vllm_names_and_label_keys() {
    let (_pod, url) = start(pod_config(A10, 2, 50.0, MetricsFlavor::Vllm)).await;
    reqwest::Client::new()
        .post(format!("{url}/v1/completions"))
        .json(&json!({"model": "lora-a", "prompt": "warm up", "max_tokens": 2}))
        .send()
        .await
        .unwrap();
    let sim = label_keys(&page(&url).await);
    let real = label_keys(FIXTURE);
    let required = [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:lora_requests_info",
        "vllm:cache_config_info",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
        "vllm:num_preemptions_total",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:time_to_first_token_seconds_sum",
        "vllm:time_to_first_token_seconds_count",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:request_queue_time_seconds_bucket",
    ];
    for name in required {
        assert!(real.contains_key(name), "fixture lacks {name}");
        assert_eq!(sim.get(name), real.get(name), "{name}: label keys differ");
    }
    for (name, keys) in &sim {
        if let Some(real_keys) = real.get(name) {
            assert_eq!(keys, real_keys, "{name}");
        } else {
            panic!("simulator emits {name}, which vLLM 0.32 does not");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picker_parses_the_simulator_like_the_fixture() {
    let (_pod, url) = start(pod_config(A10, 2, 50.0, MetricsFlavor::Vllm)).await;
    let now = Instant::now();
    let sim = parse_page(&page(&url).await, ScrapeEngine::Vllm, now).unwrap();
    let real = parse_page(FIXTURE, ScrapeEngine::Vllm, now).unwrap();
    assert_eq!(sim.lora.is_some(), real.lora.is_some());
    assert_eq!(sim.cache.is_some(), real.cache.is_some());
    assert_eq!(sim.lora.unwrap().max_lora, 2);
    assert_eq!(sim.cache.unwrap().block_size, 16);
    assert_eq!((sim.waiting, sim.running, sim.kv_usage), (0, 0, 0.0));

    // The older KV name and SGLang's names parse with the matching engine setting.
    let (_legacy, legacy_url) = start(pod_config(A10, 0, 50.0, MetricsFlavor::VllmLegacy)).await;
    let legacy_page = page(&legacy_url).await;
    assert!(legacy_page.contains("vllm:gpu_cache_usage_perc{"));
    assert!(!legacy_page.contains("vllm:kv_cache_usage_perc"));
    assert!(parse_page(&legacy_page, ScrapeEngine::Vllm, now).is_ok());
    let (_sg, sg_url) = start(pod_config(A10, 0, 50.0, MetricsFlavor::Sglang)).await;
    let sg = parse_page(&page(&sg_url).await, ScrapeEngine::Sglang, now).unwrap();
    assert_eq!(sg.cache.map(|c| c.block_size), Some(16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_models_and_adapters() {
    let (_pod, url) = start(pod_config(A10, 2, 50.0, MetricsFlavor::Vllm)).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: String| client.post(format!("{url}{path}")).body(body).send();
    let cases = [
        ("/v1/completions", "{oops".to_string(), 400, "Invalid JSON"),
        (
            "/v1/completions",
            json!({"model": MODEL}).to_string(),
            400,
            "prompt",
        ),
        (
            "/v1/chat/completions",
            json!({"model": MODEL, "prompt": "x"}).to_string(),
            400,
            "messages",
        ),
        (
            "/v1/completions",
            json!({"model": "nope", "prompt": "x"}).to_string(),
            404,
            "The model `nope` does not exist.",
        ),
        (
            "/v1/completions",
            json!({"model": MODEL, "prompt": "x", "max_tokens": 5000}).to_string(),
            400,
            "maximum context length is 4096",
        ),
        (
            "/v1/completions",
            json!({"model": MODEL, "prompt": "x", "max_tokens": 0}).to_string(),
            400,
            "max_tokens",
        ),
    ];
    for (path, body, status, text) in cases {
        let r = post(path, body.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        assert_eq!(r.headers()["x-served-by"], "sim-0");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["object"], "error");
        assert!(v["message"].as_str().unwrap().contains(text), "{v}");
    }
    let models: Value = client
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![MODEL, "lora-a", "lora-b"]);
    assert_eq!(models["data"][1]["parent"], MODEL);

    let r = post(
        "/v1/load_lora_adapter",
        json!({"lora_name": "lora-c", "lora_path": "/c"}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = post(
        "/v1/completions",
        json!({"model": "lora-c", "prompt": "x", "max_tokens": 1}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = post(
        "/v1/unload_lora_adapter",
        json!({"lora_name": "lora-c"}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = post(
        "/v1/unload_lora_adapter",
        json!({"lora_name": "lora-c"}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let r = post(
        "/v1/completions",
        json!({"model": "lora-c", "prompt": "x"}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_chat_with_usage() {
    let (_pod, url) = start(pod_config(A10, 0, 50.0, MetricsFlavor::Vllm)).await;
    let text = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                      "stream": true, "stream_options": {"include_usage": true}}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    // 5 tokens, a finish chunk, a usage chunk, [DONE].
    assert_eq!(events.len(), 8, "{text}");
    assert!(events[6].contains("\"completion_tokens\":5"));
    assert_eq!(events[7], "data: [DONE]");
}
