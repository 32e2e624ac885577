//! The published pool snapshot and the datastore that swaps it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::{Endpoint, ModelRoute};

/// An immutable view of the pool shape. Metrics live inside each [`Endpoint`] and change underneath.
#[derive(Debug, Default)]
pub struct PoolSnapshot {
    pub pool_name: String,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub models: HashMap<String, ModelRoute>,
}

impl PoolSnapshot {
    pub fn route(&self, model: &str) -> Option<&ModelRoute> {
        self.models.get(model)
    }
}

/// Holds the current [`PoolSnapshot`]; writers (config file, Kubernetes) replace it wholesale.
#[derive(Debug, Default)]
pub struct Datastore {
    current: ArcSwap<PoolSnapshot>,
}

impl Datastore {
    pub fn new(pool_name: impl Into<String>) -> Self {
        let snapshot = PoolSnapshot {
            pool_name: pool_name.into(),
            ..PoolSnapshot::default()
        };
        Self {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The current snapshot: a cheap, lock-free read for the hot path.
    pub fn snapshot(&self) -> Arc<PoolSnapshot> {
        self.current.load_full()
    }

    /// Replaces the endpoint set. Endpoints that stay keep their metrics and counters.
    pub fn set_endpoints(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let mut wanted: Vec<SocketAddr> = Vec::new();
        for addr in addrs {
            if !wanted.contains(&addr) {
                wanted.push(addr);
            }
        }
        self.current.rcu(|old| {
            let endpoints = wanted
                .iter()
                .map(|addr| {
                    old.endpoints
                        .iter()
                        .find(|e| e.addr() == *addr)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Endpoint::new(*addr)))
                })
                .collect();
            PoolSnapshot {
                pool_name: old.pool_name.clone(),
                endpoints,
                models: old.models.clone(),
            }
        });
    }

    /// Replaces the model routes.
    pub fn set_models(&self, routes: impl IntoIterator<Item = ModelRoute>) {
        let models: HashMap<String, ModelRoute> = routes
            .into_iter()
            .map(|r| (r.model_name().to_string(), r))
            .collect();
        self.current.rcu(|old| PoolSnapshot {
            pool_name: old.pool_name.clone(),
            endpoints: old.endpoints.clone(),
            models: models.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Criticality;

    #[test]
    fn endpoints_that_stay_keep_their_state() {
        let ds = Datastore::new("pool");
        let a: SocketAddr = "10.0.0.1:8000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:8000".parse().unwrap();
        ds.set_endpoints([a, b, a]);
        let before = ds.snapshot();
        assert_eq!(before.endpoints.len(), 2);
        before.endpoints[0].record_dispatch();
        ds.set_models([ModelRoute::new("m", Criticality::Critical, vec![]).unwrap()]);
        ds.set_endpoints([b, a]);
        let after = ds.snapshot();
        let kept = after.endpoints.iter().find(|e| e.addr() == a).unwrap();
        assert!(Arc::ptr_eq(kept, &before.endpoints[0]));
        assert_eq!(kept.dispatched_since_scrape(), 1);
        assert!(after.route("m").is_some());
        assert_eq!(after.pool_name, "pool");
    }
}
