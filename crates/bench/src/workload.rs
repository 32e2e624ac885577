//! Workload profiles: the fleet each one runs on and a seeded, reproducible request plan, so that
//! every arm sees the identical sequence of requests at identical offsets.
//!
//! Lengths are synthesised, not sampled from a dataset: ShareGPT-like prompts and outputs follow
//! log-normal distributions with the means the vLLM paper reports for ShareGPT (Kwon et al., SOSP
//! 2023: 161 input and 338 output tokens on average), sigma 1.0 and 0.8, clipped to the context.

use std::time::Duration;

use switchyard_openai::tokens::BYTES_PER_TOKEN;
use vllm_sim::engine::{Engine, EngineConfig, Event, RequestSpec, prompt_block_hashes};
use vllm_sim::profile::{A10, GpuProfile, H100, LLAMA_2_7B, LLAMA_3_8B, ModelProfile};

/// One simulated pod of a fleet.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub gpu: GpuProfile,
    pub model: ModelProfile,
    pub max_model_len: u32,
    pub max_num_batched_tokens: u32,
    pub num_gpu_blocks_override: Option<u32>,
    pub lora: bool,
}

impl PodSpec {
    fn a10(lora: bool) -> Self {
        Self {
            gpu: A10,
            model: LLAMA_2_7B,
            max_model_len: 4096,
            max_num_batched_tokens: 2048,
            num_gpu_blocks_override: None,
            lora,
        }
    }

    /// vllm-sim flags for this pod (the base model is always served as [`BASE_MODEL`]).
    pub fn args(&self) -> Vec<String> {
        let mut a = strings(&[
            "--gpu",
            self.gpu.name,
            "--model-profile",
            self.model.name,
            "--model",
            BASE_MODEL,
        ]);
        a.extend(strings(&["--max-model-len"]));
        a.push(self.max_model_len.to_string());
        a.push("--max-num-batched-tokens".into());
        a.push(self.max_num_batched_tokens.to_string());
        if let Some(n) = self.num_gpu_blocks_override {
            a.push("--num-gpu-blocks-override".into());
            a.push(n.to_string());
        }
        if self.lora {
            a.extend(lora_args());
        }
        a
    }

    /// The same pod as an in-process engine (for measuring capacity).
    pub fn engine_config(&self) -> EngineConfig {
        let defaults = EngineConfig::vllm_defaults(self.model, self.gpu);
        EngineConfig {
            num_gpu_blocks: self
                .num_gpu_blocks_override
                .unwrap_or(defaults.num_gpu_blocks),
            max_num_batched_tokens: self.max_num_batched_tokens,
            max_model_len: self.max_model_len,
            max_loras: if self.lora { 4 } else { 0 },
            max_cpu_loras: 12,
            ..defaults
        }
    }
}

/// One request of a plan.
#[derive(Debug, Clone)]
pub struct Planned {
    pub offset: Duration,
    pub model: String,
    pub prompt: String,
    pub max_tokens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Seed,
    Prefix,
    Hetero,
    Long,
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "seed" => Ok(Kind::Seed),
            "prefix" => Ok(Kind::Prefix),
            "hetero" => Ok(Kind::Hetero),
            "long" => Ok(Kind::Long),
            _ => Err(format!(
                "unknown workload {s:?} (seed, prefix, hetero, long)"
            )),
        }
    }
}

pub const BASE_MODEL: &str = "meta-llama/Llama-2-7b-hf";
pub const ADAPTERS: [&str; 10] = [
    "sql-lora",
    "sql-lora-1",
    "sql-lora-2",
    "sql-lora-3",
    "sql-lora-4",
    "tweet-summary",
    "tweet-summary-1",
    "tweet-summary-2",
    "tweet-summary-3",
    "tweet-summary-4",
];

/// A workload: fleet, models and request generator.
#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: Kind,
    pub name: &'static str,
    pub pods: Vec<PodSpec>,
    /// Measured capacity of the fleet (requests/s) for this mix; the default rate is 85% of it.
    pub capacity_rps: f64,
}

fn lognormal(rng: &mut fastrand::Rng, mean: f64, sigma: f64) -> f64 {
    // Box-Muller; mu chosen so that the distribution's mean is `mean`.
    let mu = mean.ln() - sigma * sigma / 2.0;
    let u1 = rng.f64().max(1e-12);
    let u2 = rng.f64();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (mu + sigma * z).exp()
}

/// Text of about `tokens` tokens (under the shared 4-bytes rule), distinct per `salt`.
fn text(rng: &mut fastrand::Rng, tokens: usize) -> String {
    let mut s = String::with_capacity(tokens * BYTES_PER_TOKEN);
    while s.len() < tokens * BYTES_PER_TOKEN {
        s.push_str(&format!("{:03} ", rng.u32(..1000)));
    }
    s.truncate(tokens * BYTES_PER_TOKEN);
    s
}

fn lora_args() -> Vec<String> {
    let mut args = strings(&[
        "--enable-lora",
        "--max-loras",
        "4",
        "--max-cpu-loras",
        "12",
        "--lora-modules",
    ]);
    args.extend(ADAPTERS.iter().map(|a| format!("{a}=/adapters/{a}")));
    args
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Workload {
    pub fn new(kind: Kind) -> Self {
        let (name, pods) = match kind {
            Kind::Seed => ("seed", vec![PodSpec::a10(true); 3]),
            Kind::Prefix => ("prefix", vec![PodSpec::a10(false); 3]),
            Kind::Hetero => {
                let mut small = PodSpec::a10(true);
                // Half the KV cache of the others.
                small.num_gpu_blocks_override = Some(small.engine_config().num_gpu_blocks / 2);
                (
                    "hetero",
                    vec![PodSpec::a10(true), PodSpec::a10(true), small],
                )
            }
            Kind::Long => {
                let pod = PodSpec {
                    gpu: H100,
                    model: LLAMA_3_8B,
                    max_model_len: 65_536,
                    max_num_batched_tokens: 8192,
                    num_gpu_blocks_override: None,
                    lora: false,
                };
                ("long", vec![pod; 2])
            }
        };
        let mut w = Workload {
            kind,
            name,
            pods,
            capacity_rps: 0.0,
        };
        w.capacity_rps = w.measure_capacity();
        w
    }

    /// Requests/s the fleet completes when saturated with this workload's mix, measured by
    /// running each pod's engine in virtual time (closed loop, 256 in flight).
    fn measure_capacity(&self) -> f64 {
        let sample = self.plan(1000.0, Duration::from_secs(1), 7);
        self.pods
            .iter()
            .map(|pod| {
                let cfg = pod.engine_config();
                let block = cfg.block_size;
                let mut engine = Engine::new(cfg);
                let spec = |p: &Planned| {
                    let adapter = (p.model != BASE_MODEL).then(|| p.model.clone());
                    RequestSpec {
                        block_hashes: prompt_block_hashes(
                            p.prompt.as_bytes(),
                            block,
                            adapter.as_deref(),
                        ),
                        adapter,
                        prompt_tokens: p.prompt.len().div_ceil(BYTES_PER_TOKEN) as u32,
                        max_tokens: p.max_tokens,
                    }
                };
                let mut next = 0;
                let in_flight = 256.min(sample.len());
                for p in &sample[..in_flight] {
                    engine.add_request(spec(p));
                    next += 1;
                }
                let mut finished = 0;
                let target = sample.len() * 2;
                while finished < target {
                    let Some(o) = engine.step() else { break };
                    for e in o.events {
                        if matches!(e, Event::Finished { .. } | Event::Aborted { .. }) {
                            finished += 1;
                            engine.add_request(spec(&sample[next % sample.len()]));
                            next += 1;
                        }
                    }
                }
                finished as f64 / engine.now().max(1e-9)
            })
            .sum()
    }

    /// The default rate: 85% of the measured capacity.
    pub fn default_rate(&self) -> f64 {
        0.85 * self.capacity_rps
    }

    /// Models and weights of a request: skewed popularity (Zipf, s = 1.1) over the base model and
    /// the ten adapters for LoRA workloads; the base model otherwise.
    fn pick_model(&self, rng: &mut fastrand::Rng) -> String {
        if !matches!(self.kind, Kind::Seed | Kind::Hetero) {
            return BASE_MODEL.to_string();
        }
        let names: Vec<&str> = std::iter::once(BASE_MODEL).chain(ADAPTERS).collect();
        let weights: Vec<f64> = (1..=names.len())
            .map(|r| 1.0 / (r as f64).powf(1.1))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut x = rng.f64() * total;
        for (n, w) in names.iter().zip(&weights) {
            if x < *w {
                return n.to_string();
            }
            x -= w;
        }
        BASE_MODEL.to_string()
    }

    /// The request plan: Poisson arrivals at `rate` for `duration`, seeded.
    pub fn plan(&self, rate: f64, duration: Duration, seed: u64) -> Vec<Planned> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut plan = Vec::new();
        let mut t = 0.0;
        // Prefix workload: 8 long system prompts, 64 users, each a growing conversation.
        let systems: Vec<String> = (0..8).map(|_| text(&mut rng, 1500)).collect();
        let mut conversations: Vec<String> = (0..64).map(|u| systems[u % 8].clone()).collect();
        loop {
            t += -rng.f64().max(1e-12).ln() / rate;
            if t >= duration.as_secs_f64() {
                break;
            }
            let (model, prompt, max_tokens) = match self.kind {
                Kind::Seed | Kind::Hetero => {
                    let input = lognormal(&mut rng, 161.0, 1.0).clamp(4.0, 2048.0) as usize;
                    let output = lognormal(&mut rng, 338.0, 0.8).clamp(4.0, 1024.0) as u32;
                    (self.pick_model(&mut rng), text(&mut rng, input), output)
                }
                Kind::Prefix => {
                    let user = rng.usize(..conversations.len());
                    let turn_tokens = 40 + rng.usize(..80);
                    let turn = text(&mut rng, turn_tokens);
                    let convo = &mut conversations[user];
                    convo.push_str(&turn);
                    if convo.len() > 3000 * BYTES_PER_TOKEN {
                        *convo = systems[user % 8].clone(); // a new conversation
                    }
                    let prompt = convo.clone();
                    let answer = lognormal(&mut rng, 100.0, 0.5).clamp(8.0, 400.0) as u32;
                    // The assistant's answer becomes part of the next turn's history.
                    convo.push_str(&text(&mut rng, answer as usize));
                    (BASE_MODEL.to_string(), prompt, answer)
                }
                Kind::Long => {
                    let bytes = 100 * 1024 + rng.usize(..120 * 1024);
                    (
                        BASE_MODEL.to_string(),
                        text(&mut rng, bytes / BYTES_PER_TOKEN),
                        64,
                    )
                }
            };
            plan.push(Planned {
                offset: Duration::from_secs_f64(t),
                model,
                prompt,
                max_tokens,
            });
        }
        plan
    }

    /// The Switchyard config for this fleet: the pool plus the seed scenario's traffic split.
    pub fn switchyard_yaml(&self, endpoints: &[String]) -> String {
        let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        format!(
            "pool:\n  name: bench-pool\n  endpoints: [{}]\nmodels:\n  - modelName: tweet-summary\n    criticality: Critical\n    targetModels: [{{name: tweet-summary, weight: 100}}]\n",
            list.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_reproducible_and_near_the_rate() {
        let w = Workload::new(Kind::Seed);
        let a = w.plan(5.0, Duration::from_secs(100), 42);
        let b = w.plan(5.0, Duration::from_secs(100), 42);
        assert_eq!(a.len(), b.len());
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.offset == y.offset && x.prompt == y.prompt && x.model == y.model)
        );
        assert!((400..600).contains(&a.len()), "{}", a.len());
        let mean_out = a.iter().map(|p| f64::from(p.max_tokens)).sum::<f64>() / a.len() as f64;
        assert!((250.0..420.0).contains(&mean_out), "{mean_out}");
        let adapters = a.iter().filter(|p| p.model != BASE_MODEL).count();
        assert!(adapters > a.len() / 2);
    }
}
