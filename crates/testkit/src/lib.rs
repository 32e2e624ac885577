//! Helpers shared by the end-to-end tests and the local demo: an in-process stub model server
//! that reports configurable vLLM metrics and records exactly what it received, and managed
//! child processes for the real Envoy and the Switchyard binary (ports bound at 0 and read back),
//! and real vLLM (CPU) servers with a locally built tiny model.
#![forbid(unsafe_code)]

pub mod envoy;
pub mod process;
pub mod stub;
pub mod vllm;

pub use envoy::{EnvoyProcess, envoy_binary, validate_envoy_config};
pub use process::{SwitchyardProcess, free_port, scratch_dir};
pub use stub::{Received, StubMetrics, StubServer};
pub use vllm::{TinyModel, VllmOptions, VllmProcess, vllm_python};
