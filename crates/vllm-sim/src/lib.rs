//! vllm-sim: a model server that behaves like vLLM under load, on a 2-core machine.
//!
//! The [`engine`] reproduces vLLM v1's scheduler (continuous batching, chunked prefill, paged KV
//! blocks with preemption, prefix caching, LoRA slots) in virtual time; the [`cost`] model turns
//! each step's work into seconds from the GPU's FLOP/s and bandwidth; [`server`] drives engines in
//! real time (scaled by a speed factor) behind vLLM's OpenAI HTTP API and `/metrics` page.
#![forbid(unsafe_code)]

pub mod cost;
pub mod engine;
pub mod kv;
pub mod lora;
pub mod metrics;
pub mod profile;
pub mod server;
pub mod stats;
