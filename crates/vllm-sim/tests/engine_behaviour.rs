//! The engine under load, in virtual time: idle latency equals the cost model, throughput rises
//! with concurrency and saturates, and a small KV cache produces queues, preemptions and full
//! usage.

use vllm_sim::cost::Calibration;
use vllm_sim::engine::{Engine, EngineConfig, Event, RequestSpec};
use vllm_sim::profile::{A10, A100_80GB, GpuProfile, LLAMA_2_7B};

fn config(gpu: GpuProfile, blocks: Option<u32>) -> EngineConfig {
    let defaults = EngineConfig::vllm_defaults(LLAMA_2_7B, gpu);
    EngineConfig {
        num_gpu_blocks: blocks.unwrap_or(defaults.num_gpu_blocks),
        ..defaults
    }
}

fn spec(prompt: u32, max_tokens: u32) -> RequestSpec {
    RequestSpec {
        adapter: None,
        prompt_tokens: prompt,
        block_hashes: Vec::new(),
        max_tokens,
    }
}

/// The cost formula written out independently of the crate's implementation.
fn expected_step(gpu: GpuProfile, tokens: f64, kv_tokens: f64) -> f64 {
    let c = Calibration::default();
    let m = LLAMA_2_7B;
    let compute = 2.0 * m.params * tokens / (gpu.peak_flops * c.compute_efficiency);
    let kv_bytes = 2.0 * 32.0 * 32.0 * 128.0 * 2.0;
    let memory =
        (m.params * 2.0 + kv_tokens * kv_bytes) / (gpu.hbm_bandwidth * c.memory_efficiency);
    c.step_overhead + c.per_sequence_overhead + compute.max(memory)
}

#[test]
fn idle_ttft_and_token_time_match_the_cost_model() {
    for gpu in [A10, A100_80GB] {
        for prompt in [20u32, 2000] {
            let mut e = Engine::new(config(gpu, None));
            e.add_request(spec(prompt, 3));
            let mut times = Vec::new();
            while let Some(o) = e.step() {
                for ev in o.events {
                    if let Event::Token { at, .. } = ev {
                        times.push(at);
                    }
                }
            }
            let ttft = times[0];
            let want_ttft = expected_step(gpu, f64::from(prompt), f64::from(prompt));
            assert!(
                (ttft - want_ttft).abs() < 1e-9,
                "{} {prompt}: {ttft} vs {want_ttft}",
                gpu.name
            );
            let tpot = times[1] - times[0];
            let want_tpot = expected_step(gpu, 1.0, f64::from(prompt + 1));
            assert!(
                (tpot - want_tpot).abs() < 1e-9,
                "{} {prompt}: {tpot} vs {want_tpot}",
                gpu.name
            );
            // Prefill of 2,000 tokens is compute-bound and far slower than one decode step.
            if prompt == 2000 {
                assert!(ttft > 10.0 * tpot);
            }
        }
    }
}

/// Keeps `concurrency` requests in flight until `total` finish; returns output tokens per
/// virtual second and the largest queue and KV usage seen.
fn closed_loop(
    cfg: EngineConfig,
    concurrency: usize,
    total: usize,
    prompt: u32,
    output: u32,
) -> (f64, usize, f64, u64) {
    let mut e = Engine::new(cfg);
    let mut started = 0;
    let mut finished = 0;
    let mut tokens = 0u64;
    let (mut max_waiting, mut max_kv) = (0, 0.0f64);
    while started < concurrency.min(total) {
        e.add_request(spec(prompt, output));
        started += 1;
    }
    while finished < total {
        let Some(o) = e.step() else { break };
        max_waiting = max_waiting.max(e.num_waiting());
        max_kv = max_kv.max(e.kv_usage());
        for ev in o.events {
            match ev {
                Event::Token { .. } => tokens += 1,
                Event::Finished { .. } => {
                    finished += 1;
                    if started < total {
                        e.add_request(spec(prompt, output));
                        started += 1;
                    }
                }
                Event::Aborted { reason, .. } => panic!("aborted: {reason}"),
            }
        }
    }
    (
        tokens as f64 / e.now(),
        max_waiting,
        max_kv,
        e.stats.preemptions,
    )
}

#[test]
fn throughput_rises_with_concurrency_then_saturates() {
    let levels = [1usize, 8, 32, 128, 256];
    let thr: Vec<f64> = levels
        .iter()
        .map(|&c| closed_loop(config(A100_80GB, None), c, 3 * c.max(8), 512, 128).0)
        .collect();
    for w in thr.windows(2) {
        assert!(w[1] >= w[0] * 0.98, "throughput fell: {thr:?}");
    }
    assert!(thr[1] > 4.0 * thr[0], "batching must pay off: {thr:?}");
    assert!(thr[4] < 1.25 * thr[3], "must saturate: {thr:?}");
}

#[test]
fn small_kv_cache_queues_preempts_and_fills() {
    // 64 blocks x 16 tokens = 1,024 tokens for 16 requests of 200 + 200 tokens.
    let (_, max_waiting, max_kv, preemptions) =
        closed_loop(config(A10, Some(64)), 16, 48, 200, 200);
    assert!(max_waiting > 0, "requests must wait");
    assert!(preemptions > 0, "requests must be preempted");
    assert!(max_kv > 0.95, "KV usage must reach ~1.0, got {max_kv}");
}

#[test]
fn calibration_a10_llama2_7b_offline_throughput() {
    // Published: vLLM benchmark_throughput, Llama-2-7b-chat-hf on one A10G, 1,000 prompts of
    // 256 input / 128 output tokens: 3.80-3.84 requests/s (nm-vllm CI results, see README).
    let mut cfg = config(A10, None);
    cfg.max_num_batched_tokens = 4096; // that vLLM's default: max_model_len, no chunked prefill
    let (tokens_per_s, _, _, _) = closed_loop(cfg, 1000, 1000, 256, 128);
    let requests_per_s = tokens_per_s / 128.0;
    let published = 3.82;
    let error = (requests_per_s - published).abs() / published;
    println!(
        "A10 Llama-2-7B offline: {requests_per_s:.2} req/s vs {published} published ({:.0}% off)",
        error * 100.0
    );
    assert!(error < 0.30, "{requests_per_s:.2} req/s vs {published}");
}
