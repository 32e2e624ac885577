//! The engine: vLLM v1's scheduling semantics in virtual time, with no I/O.
//!
//! Each [`Engine::step`] is one forward pass: running requests first (one decode token each, or
//! their next prefill chunk), preempting the most recently admitted request when KV blocks run
//! out; then, if nothing was preempted, waiting requests in FCFS order while `max_num_seqs`, the
//! token budget (chunked prefill), free KV blocks and the LoRA batch limit allow. The step's
//! duration comes from the cost model; tokens are emitted at its end.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use crate::cost::{CostModel, StepWork};
use crate::kv::{BlockId, KvCache};
use crate::lora::LoraSlots;
use crate::stats::Stats;

pub type RequestId = u64;

/// Engine limits (vLLM's flags of the same names).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub cost: CostModel,
    pub max_num_seqs: u32,
    pub max_num_batched_tokens: u32,
    pub max_model_len: u32,
    pub block_size: u32,
    pub num_gpu_blocks: u32,
    pub enable_prefix_caching: bool,
    /// 0 disables LoRA.
    pub max_loras: u32,
    pub max_cpu_loras: u32,
}

impl EngineConfig {
    /// vLLM's defaults for `model` on `gpu`: 256 sequences, a 2,048-token budget, the model's
    /// context, 16-token blocks filling 90% of GPU memory, prefix caching on, LoRA off.
    pub fn vllm_defaults(
        model: crate::profile::ModelProfile,
        gpu: crate::profile::GpuProfile,
    ) -> Self {
        let cost = CostModel::new(model, gpu, crate::cost::Calibration::default(), 16);
        Self {
            num_gpu_blocks: cost.kv_blocks(0.9, 16) as u32,
            cost,
            max_num_seqs: 256,
            max_num_batched_tokens: 2048,
            max_model_len: model.max_model_len,
            block_size: 16,
            enable_prefix_caching: true,
            max_loras: 0,
            max_cpu_loras: 0,
        }
    }
}

/// A request as the engine sees it: token counts and prompt block hashes, no text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    pub adapter: Option<String>,
    pub prompt_tokens: u32,
    /// Chained hashes of the prompt's full blocks (see [`prompt_block_hashes`]).
    pub block_hashes: Vec<u64>,
    pub max_tokens: u32,
}

/// What a step produced for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Output token `index` (0-based) was generated at virtual time `at`.
    Token { id: RequestId, index: u32, at: f64 },
    /// The request finished with all its tokens.
    Finished {
        id: RequestId,
        prompt_tokens: u32,
        completion_tokens: u32,
        cached_tokens: u32,
    },
    /// The request can never run (needs more KV blocks than the whole cache).
    Aborted { id: RequestId, reason: String },
}

/// One step's result.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    pub duration: f64,
    pub events: Vec<Event>,
}

#[derive(Debug)]
struct Request {
    spec: RequestSpec,
    arrival: f64,
    num_computed: u32,
    output: u32,
    blocks: Vec<BlockId>,
    registered: usize,
    first_scheduled: Option<f64>,
    first_token: Option<f64>,
    last_token: Option<f64>,
    cached_tokens: u32,
}

impl Request {
    fn num_tokens(&self) -> u32 {
        self.spec.prompt_tokens + self.output
    }
}

/// The simulated engine of one pod.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    now: f64,
    next_id: RequestId,
    requests: HashMap<RequestId, Request>,
    waiting: VecDeque<RequestId>,
    running: Vec<RequestId>,
    kv: KvCache,
    lora: LoraSlots,
    pub stats: Stats,
}

/// Chained block hashes of a prompt: block i covers bytes [i*B*4, (i+1)*B*4) under the shared
/// 4-bytes-per-token rule; the chain starts from the adapter name so adapters never share KV.
pub fn prompt_block_hashes(prompt: &[u8], block_size: u32, adapter: Option<&str>) -> Vec<u64> {
    let block_bytes = block_size as usize * switchyard_openai::tokens::BYTES_PER_TOKEN;
    let mut parent = {
        let mut h = std::hash::DefaultHasher::new();
        adapter.unwrap_or("").hash(&mut h);
        h.finish()
    };
    prompt
        .chunks_exact(block_bytes.max(1))
        .map(|chunk| {
            let mut h = std::hash::DefaultHasher::new();
            parent.hash(&mut h);
            chunk.hash(&mut h);
            parent = h.finish();
            parent
        })
        .collect()
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Self {
            kv: KvCache::new(config.num_gpu_blocks),
            lora: LoraSlots::new(config.max_loras, config.max_cpu_loras),
            config,
            now: 0.0,
            next_id: 0,
            requests: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn now(&self) -> f64 {
        self.now
    }

    /// Moves the idle clock forward (an idle engine's time follows the wall clock).
    pub fn advance_to(&mut self, t: f64) {
        if t > self.now {
            self.now = t;
        }
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn kv_usage(&self) -> f64 {
        self.kv.usage()
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Adapters of running requests, and (vLLM 0.32) adapters with any active request.
    pub fn lora_state(&self) -> (Vec<String>, Vec<String>) {
        let mut running: Vec<String> = Vec::new();
        for id in &self.running {
            if let Some(a) = &self.requests[id].spec.adapter
                && !running.contains(a)
            {
                running.push(a.clone());
            }
        }
        let mut active = running.clone();
        for id in &self.waiting {
            if let Some(a) = &self.requests[id].spec.adapter
                && !active.contains(a)
            {
                active.push(a.clone());
            }
        }
        (running, active)
    }

    pub fn add_request(&mut self, spec: RequestSpec) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        self.requests.insert(
            id,
            Request {
                spec,
                arrival: self.now,
                num_computed: 0,
                output: 0,
                blocks: Vec::new(),
                registered: 0,
                first_scheduled: None,
                first_token: None,
                last_token: None,
                cached_tokens: 0,
            },
        );
        self.waiting.push_back(id);
        id
    }

    /// Drops a request (client went away).
    pub fn abort(&mut self, id: RequestId) {
        if let Some(r) = self.requests.remove(&id) {
            for b in r.blocks {
                self.kv.release(b);
            }
            self.waiting.retain(|w| *w != id);
            self.running.retain(|w| *w != id);
        }
    }

    fn blocks_for(&self, tokens: u32) -> usize {
        tokens.div_ceil(self.config.block_size) as usize
    }

    fn preempt(&mut self, id: RequestId) {
        if let Some(r) = self.requests.get_mut(&id) {
            for b in r.blocks.drain(..) {
                self.kv.release(b);
            }
            r.num_computed = 0;
            r.registered = 0;
        }
        self.stats.preemptions += 1;
        self.waiting.push_front(id);
    }

    /// Runs one step. `None` when there is nothing to do.
    pub fn step(&mut self) -> Option<StepOutcome> {
        if self.is_idle() {
            return None;
        }
        let mut budget = self.config.max_num_batched_tokens;
        let mut scheduled: Vec<(RequestId, u32)> = Vec::new();
        let mut adapters: Vec<String> = Vec::new();
        let mut preempted = false;

        // 1. Running requests, in admission order.
        let mut idx = 0;
        while idx < self.running.len() && budget > 0 {
            let id = self.running[idx];
            let (remaining, computed, have) = {
                let r = &self.requests[&id];
                (
                    r.num_tokens() - r.num_computed,
                    r.num_computed,
                    r.blocks.len(),
                )
            };
            let new = remaining.min(budget);
            let mut needed = self.blocks_for(computed + new).saturating_sub(have);
            let mut self_preempted = false;
            while needed as u32 > self.kv.free() {
                let Some(victim) = self.running.pop() else {
                    break;
                };
                self.preempt(victim);
                preempted = true;
                if victim == id {
                    self_preempted = true;
                    break;
                }
            }
            if self_preempted {
                break;
            }
            let r = self.requests.get_mut(&id).expect("running request exists");
            while needed > 0 {
                let Some(b) = self.kv.allocate() else { break };
                r.blocks.push(b);
                needed -= 1;
            }
            if let Some(a) = &r.spec.adapter
                && !adapters.contains(a)
            {
                adapters.push(a.clone());
            }
            scheduled.push((id, new));
            budget -= new;
            idx += 1;
        }

        // 2. Waiting requests, FCFS, unless this step had to preempt.
        if !preempted {
            let mut i = 0;
            while i < self.waiting.len()
                && (self.running.len() as u32) < self.config.max_num_seqs
                && budget > 0
            {
                let id = self.waiting[i];
                let r = &self.requests[&id];
                if let Some(a) = &r.spec.adapter
                    && !adapters.contains(a)
                    && adapters.len() as u32 >= self.config.max_loras
                {
                    i += 1; // its adapter would exceed max_loras: it waits, others proceed
                    continue;
                }
                let num_tokens = r.num_tokens();
                let cached_blocks = if self.config.enable_prefix_caching {
                    // At least one token must be computed to produce logits.
                    let limit = ((num_tokens - 1) / self.config.block_size) as usize;
                    let hashes = &r.spec.block_hashes[..r.spec.block_hashes.len().min(limit)];
                    self.kv.cached_prefix(hashes)
                } else {
                    0
                };
                let cached_tokens = cached_blocks as u32 * self.config.block_size;
                let new = (num_tokens - cached_tokens).min(budget);
                let new_blocks = self.blocks_for(cached_tokens + new) - cached_blocks;
                if (new_blocks + cached_blocks) as u32 > self.kv.free() {
                    if self.running.is_empty()
                        && scheduled.is_empty()
                        && self.blocks_for(num_tokens) as u32 > self.kv.total()
                    {
                        let reason = format!(
                            "request needs {} KV blocks, the cache has {}",
                            self.blocks_for(num_tokens),
                            self.kv.total()
                        );
                        self.waiting.remove(i);
                        self.requests.remove(&id);
                        return Some(StepOutcome {
                            duration: 0.0,
                            events: vec![Event::Aborted { id, reason }],
                        });
                    }
                    break;
                }
                let hashes: Vec<u64> = r.spec.block_hashes[..cached_blocks].to_vec();
                let adapter = r.spec.adapter.clone();
                let prompt_tokens = r.spec.prompt_tokens;
                let mut blocks = Vec::with_capacity(new_blocks + cached_blocks);
                for h in hashes {
                    blocks.extend(self.kv.acquire_cached(h));
                }
                for _ in 0..new_blocks {
                    blocks.extend(self.kv.allocate());
                }
                let now = self.now;
                let r = self.requests.get_mut(&id).expect("waiting request exists");
                r.blocks = blocks;
                r.num_computed = cached_tokens;
                r.registered = cached_blocks;
                if r.first_scheduled.is_none() {
                    r.first_scheduled = Some(now);
                    r.cached_tokens = cached_tokens;
                    self.stats.queue_time.observe(now - r.arrival);
                    self.stats.prefix_queries += u64::from(prompt_tokens);
                    self.stats.prefix_hits += u64::from(cached_tokens.min(prompt_tokens));
                }
                if let Some(a) = adapter
                    && !adapters.contains(&a)
                {
                    adapters.push(a);
                }
                self.waiting.remove(i);
                self.running.push(id);
                scheduled.push((id, new));
                budget -= new;
            }
        }

        if scheduled.is_empty() {
            // Everything is blocked (e.g. all waiting requests need an adapter slot held by
            // nobody running). Cannot happen with max_loras >= 1; guard against a busy loop.
            return Some(StepOutcome {
                duration: self.config.cost.calibration.step_overhead,
                events: Vec::new(),
            });
        }

        // 3. Cost of the step.
        let loads = self.lora.activate(&adapters);
        let work = StepWork {
            tokens: scheduled.iter().map(|(_, n)| u64::from(*n)).sum(),
            sequences: scheduled.len() as u32,
            kv_tokens_read: scheduled
                .iter()
                .map(|(id, n)| u64::from(self.requests[id].num_computed + n))
                .sum(),
            lora_in_batch: !adapters.is_empty(),
            lora_loads_from_cpu: loads.from_cpu,
            lora_loads_from_disk: loads.from_disk,
        };
        let duration = self.config.cost.step_time(&work);
        self.now += duration;
        self.stats.iteration_tokens.observe(work.tokens as f64);

        // 4. Apply: advance computed tokens, sample where the whole sequence is computed.
        let mut events = Vec::new();
        for (id, new) in scheduled {
            let now = self.now;
            let bs = self.config.block_size;
            let r = self
                .requests
                .get_mut(&id)
                .expect("scheduled request exists");
            r.num_computed += new;
            let full = (r.num_computed / bs) as usize;
            while r.registered < full.min(r.spec.block_hashes.len()).min(r.blocks.len()) {
                self.kv
                    .register(r.blocks[r.registered], r.spec.block_hashes[r.registered]);
                r.registered += 1;
            }
            if r.num_computed < r.num_tokens() {
                continue; // prefill chunk (or recompute) not finished yet
            }
            let index = r.output;
            r.output += 1;
            self.stats.generation_tokens += 1;
            match r.last_token {
                None => {
                    if r.first_token.is_none() {
                        r.first_token = Some(now);
                        self.stats.ttft.observe(now - r.arrival);
                        self.stats.prompt_tokens += u64::from(r.spec.prompt_tokens);
                    }
                }
                Some(prev) => self.stats.inter_token.observe(now - prev),
            }
            r.last_token = Some(now);
            events.push(Event::Token { id, index, at: now });
            if r.output >= r.spec.max_tokens {
                let r = self.requests.remove(&id).expect("finished request exists");
                for b in r.blocks {
                    self.kv.release(b);
                }
                self.running.retain(|x| *x != id);
                self.stats.request_success += 1;
                self.stats.e2e.observe(now - r.arrival);
                events.push(Event::Finished {
                    id,
                    prompt_tokens: r.spec.prompt_tokens,
                    completion_tokens: r.output,
                    cached_tokens: r.cached_tokens,
                });
            }
        }
        Some(StepOutcome { duration, events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{A100_80GB, LLAMA_2_7B};

    fn engine(blocks: u32, max_loras: u32) -> Engine {
        Engine::new(EngineConfig {
            num_gpu_blocks: blocks,
            max_loras,
            max_cpu_loras: 4,
            ..EngineConfig::vllm_defaults(LLAMA_2_7B, A100_80GB)
        })
    }

    fn spec(prompt: u32, max_tokens: u32) -> RequestSpec {
        RequestSpec {
            adapter: None,
            prompt_tokens: prompt,
            block_hashes: Vec::new(),
            max_tokens,
        }
    }

    fn run(e: &mut Engine) -> Vec<Event> {
        let mut all = Vec::new();
        while let Some(o) = e.step() {
            all.extend(o.events);
        }
        all
    }

    #[test]
    fn chunked_prefill_then_one_token_per_step() {
        let mut e = engine(1000, 0);
        e.add_request(spec(5000, 3));
        let mut steps = Vec::new();
        while let Some(o) = e.step() {
            steps.push(o.events.len());
        }
        // 5000 tokens at 2048 per step: 3 prefill steps (the last samples token 0), then 2.
        assert_eq!(steps, vec![0, 0, 1, 1, 2]);
        assert_eq!(e.stats.generation_tokens, 3);
        assert_eq!(e.kv_usage(), 0.0);
    }

    #[test]
    fn preemption_when_blocks_run_out() {
        let mut e = engine(8, 0); // 128 tokens of KV
        for _ in 0..3 {
            e.add_request(spec(30, 40));
        }
        let events = run(&mut e);
        let finished = events
            .iter()
            .filter(|e| matches!(e, Event::Finished { .. }))
            .count();
        assert_eq!(finished, 3);
        assert!(e.stats.preemptions > 0);
    }

    #[test]
    fn oversized_request_is_aborted_not_looped() {
        let mut e = engine(4, 0);
        e.add_request(spec(100, 1));
        let events = run(&mut e);
        assert!(matches!(events[0], Event::Aborted { .. }));
    }

    #[test]
    fn lora_limit_holds_back_a_second_adapter() {
        let mut e = engine(1000, 1);
        let mut a = spec(10, 5);
        a.adapter = Some("a".into());
        let mut b = spec(10, 5);
        b.adapter = Some("b".into());
        e.add_request(a);
        e.add_request(b);
        e.step();
        assert_eq!((e.num_running(), e.num_waiting()), (1, 1));
        assert_eq!(
            e.lora_state(),
            (
                vec!["a".to_string()],
                vec!["a".to_string(), "b".to_string()]
            )
        );
        run(&mut e);
        assert_eq!(e.stats.request_success, 2);
    }

    #[test]
    fn prefix_hit_skips_cached_blocks() {
        let prompt = vec![b'x'; 4 * 16 * 64]; // 64 blocks of 16 tokens
        let hashes = prompt_block_hashes(&prompt, 16, None);
        assert_eq!(hashes.len(), 64);
        let mut e = engine(1000, 0);
        let mut s = spec(1024, 1);
        s.block_hashes = hashes;
        e.add_request(s.clone());
        let first = e.step().unwrap().duration;
        e.add_request(s);
        let second = e.step().unwrap().duration;
        assert!(second < first / 5.0, "{second} vs {first}");
        assert_eq!(e.stats.prefix_hits, 63 * 16);
    }
}
