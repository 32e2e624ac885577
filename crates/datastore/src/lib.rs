//! Switchyard's view of one InferencePool: its endpoints with their latest scraped metrics, and the
//! model routes (InferenceModel specs). Both the local config file and (later) Kubernetes feed it.
//!
//! Readers never lock: the pool shape (endpoints and routes) is an immutable [`PoolSnapshot`]
//! published through an `ArcSwap`, and each endpoint's metrics sit behind their own `ArcSwapOption`
//! so that a scrape does not rebuild the snapshot; the few numbers scoring reads per decision are
//! also kept flat in atomics ([`LoadView`]).
#![forbid(unsafe_code)]

mod endpoint;
mod load;
mod model;
mod snapshot;

pub use endpoint::{CacheInfo, Endpoint, EndpointMetrics, LoraState};
pub use load::{AdapterKey, LoadView, LoraView, TRACKED_ADAPTERS, clock_nanos};
pub use model::{Criticality, ModelRoute, RouteError, TargetModel};
pub use snapshot::{Datastore, PoolSnapshot};
