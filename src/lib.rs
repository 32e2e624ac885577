//! Switchyard: an LLM-aware endpoint picker for Envoy's ext_proc filter.
//!
//! The library holds the parts of the binary that tests and benches reach directly: the
//! configuration, the router (parse -> split -> schedule), the tonic service and the wiring.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod pool_gauges;
pub mod response_usage;
pub mod router;
pub mod service;
pub mod telemetry;
