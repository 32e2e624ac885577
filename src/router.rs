//! From a complete request to a routing decision: parse the body once, resolve the model's
//! traffic split, ask the scheduler, and map every failure to the reference's status and code.
//! This is the one place where errors become client-facing responses.

use std::sync::Arc;
use std::time::Instant;

use switchyard_datastore::{Criticality, Datastore};
use switchyard_extproc::{Decided, Rejection, RouteRequest};
use switchyard_openai::{ApiKind, ParseError, parse_request, rewrite_model};
use switchyard_scheduler::{
    Decision, PickRequest, PrefixIndex, ScheduleError, Scheduler, block_hashes,
};

use crate::telemetry::Telemetry;

/// What the router learned, for logs and metrics, beside the decision itself.
#[derive(Debug, Default, Clone)]
pub struct RouteNotes {
    pub request_id: String,
    pub model: Option<String>,
    pub target_model: Option<String>,
}

/// Routing policy shared by all streams.
#[derive(Debug)]
pub struct Router {
    datastore: Arc<Datastore>,
    scheduler: Scheduler,
    strict_models: bool,
    telemetry: Arc<Telemetry>,
    prefixes: PrefixIndex,
}

/// Prefix-index entries kept per endpoint: the reference's default KV blocks per pod.
const PREFIX_BLOCKS_PER_ENDPOINT: usize = 31_250;

fn reject(status: u16, code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        status,
        code,
        message: message.into(),
    }
}

fn bad_request(e: &ParseError) -> Rejection {
    reject(400, "BadRequest", e.to_string())
}

fn schedule_rejection(e: ScheduleError) -> Rejection {
    match e {
        ScheduleError::NoEndpoints | ScheduleError::SubsetMismatch => {
            reject(503, "ServiceUnavailable", e.to_string())
        }
        ScheduleError::Saturated => reject(429, "ResourceExhausted", e.to_string()),
    }
}

impl Router {
    pub fn new(
        datastore: Arc<Datastore>,
        scheduler: Scheduler,
        strict_models: bool,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let endpoints = datastore.snapshot().endpoints.len().max(1);
        Self {
            datastore,
            scheduler,
            strict_models,
            telemetry,
            prefixes: PrefixIndex::new(endpoints * PREFIX_BLOCKS_PER_ENDPOINT),
        }
    }

    pub fn datastore(&self) -> &Arc<Datastore> {
        &self.datastore
    }

    /// Records the tokens the model server reported for a routed request.
    pub fn record_usage(&self, model: &str, target_model: &str, usage: switchyard_openai::Usage) {
        self.telemetry.tokens(model, target_model, usage);
    }

    /// Decides where a complete request goes. `now` is the scheduler's clock.
    pub fn route(
        &self,
        request: RouteRequest<'_>,
        now: Instant,
        rng: &mut fastrand::Rng,
    ) -> (Result<Decided, Rejection>, RouteNotes) {
        let started = Instant::now();
        let mut notes = RouteNotes::default();
        let mut set_headers = Vec::new();
        notes.request_id = match &request.head.request_id {
            Some(id) => id.clone(),
            None => {
                let id = format!("{:016x}{:016x}", rng.u64(..), rng.u64(..));
                set_headers.push(("x-request-id".to_string(), id.clone()));
                id
            }
        };

        let parsed = match request.body {
            Some(body) => match parse_request(ApiKind::from_path(&request.head.path), body) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.telemetry.error("", "", "BadRequest");
                    return (Err(bad_request(&e)), notes);
                }
            },
            None => None,
        };
        let model = parsed.as_ref().and_then(|p| p.model.clone());
        let snapshot = self.datastore.snapshot();

        let (target, criticality) = match model.as_deref() {
            None => (String::new(), Criticality::Standard),
            Some(m) => match snapshot.route(m) {
                Some(route) => (
                    route.pick_target(rng.u64(..)).to_string(),
                    route.criticality(),
                ),
                None if self.strict_models => {
                    self.telemetry.error(m, m, "BadConfiguration");
                    notes.model = model.clone();
                    let message =
                        format!("model {m:?} is not served by pool {}", snapshot.pool_name);
                    return (Err(reject(404, "BadConfiguration", message)), notes);
                }
                None => (m.to_string(), Criticality::Standard),
            },
        };
        notes.model = model.clone();
        notes.target_model = (!target.is_empty()).then(|| target.clone());

        // Prefix affinity: hash the prompt once, look up where its leading blocks went before.
        let prefix_on = self.scheduler.config().prefix_cache_weight > 0.0;
        let hashes = match (&parsed, request.body) {
            (Some(p), Some(body)) if prefix_on => p
                .prompt_span
                .clone()
                .map(|span| block_hashes(&target, &body[span]))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let matches = (!hashes.is_empty()).then(|| {
            let addrs: Vec<_> = snapshot.endpoints.iter().map(|e| e.addr()).collect();
            self.prefixes.matches(&hashes, &addrs)
        });
        let pick = PickRequest {
            target_model: &target,
            criticality,
            subset: request.subset,
            prefix_matches: matches.as_deref(),
        };
        let decision: Decision = match self.scheduler.pick(&snapshot, &pick, now, rng) {
            Ok(d) => d,
            Err(e) => {
                let rejection = schedule_rejection(e);
                let m = model.as_deref().unwrap_or("");
                self.telemetry.error(m, &target, rejection.code);
                return (Err(rejection), notes);
            }
        };
        decision.endpoint.record_dispatch();
        if !hashes.is_empty() {
            self.prefixes.record(&hashes, decision.endpoint.addr());
        }
        if decision.fail_open {
            self.telemetry.fail_open();
        }

        // Splice the target name into the original bytes only when the split changed it.
        let body = match (&parsed, request.body, model.as_deref()) {
            (Some(p), Some(bytes), Some(m)) if m != target => p
                .model_span
                .clone()
                .map(|span| rewrite_model(bytes, span, &target)),
            _ => None,
        };
        self.telemetry.decision_time(started);
        if let Some(m) = model.as_deref() {
            self.telemetry.request(m, &target);
        }
        tracing::debug!(
            request_id = %notes.request_id,
            model = model.as_deref().unwrap_or(""),
            target_model = %target,
            endpoint = %decision.endpoint.addr_text(),
            score = decision.score,
            queue = decision.winner.queue,
            kv_usage = decision.winner.kv_usage,
            lora_affinity = decision.winner.lora_affinity,
            prefix_match = decision.winner.prefix_match,
            candidates = decision.candidates,
            fail_open = decision.fail_open,
            "routed"
        );
        (
            Ok(Decided {
                destination: decision.endpoint.addr_text().to_string(),
                body,
                set_headers,
            }),
            notes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_datastore::{EndpointMetrics, ModelRoute};
    use switchyard_extproc::RequestHead;
    use switchyard_scheduler::SchedulerConfig;

    fn router(strict: bool, endpoints: &[&str]) -> Router {
        let ds = Arc::new(Datastore::new("pool"));
        ds.set_endpoints(endpoints.iter().map(|e| e.parse().unwrap()));
        for e in &ds.snapshot().endpoints {
            e.publish_metrics(
                EndpointMetrics {
                    waiting: 0,
                    running: 0,
                    kv_usage: 0.0,
                    lora: None,
                    cache: None,
                    scraped_at: Instant::now(),
                },
                0,
            );
        }
        ds.set_models([
            ModelRoute::new(
                "tweet-summary",
                Criticality::Critical,
                vec![("tweet-summary-1".into(), Some(1))],
            )
            .unwrap(),
            ModelRoute::new("same", Criticality::Critical, vec![]).unwrap(),
        ]);
        Router::new(
            ds,
            Scheduler::new(SchedulerConfig::default()),
            strict,
            Arc::new(Telemetry::default()),
        )
    }

    fn route(r: &Router, path: &str, body: Option<&str>) -> Result<Decided, Rejection> {
        let head = RequestHead {
            method: "POST".into(),
            path: path.into(),
            request_id: Some("rid".into()),
            ..Default::default()
        };
        let req = RouteRequest {
            head: &head,
            body: body.map(str::as_bytes),
            subset: None,
        };
        r.route(req, Instant::now(), &mut fastrand::Rng::with_seed(1))
            .0
    }

    #[test]
    fn outcomes_table() {
        let r = router(false, &["10.0.0.1:8000"]);
        let ok = route(
            &r,
            "/v1/completions",
            Some(r#"{"model":"tweet-summary","prompt":"x"}"#),
        )
        .unwrap();
        assert_eq!(ok.destination, "10.0.0.1:8000");
        assert_eq!(
            ok.body.as_deref(),
            Some(&br#"{"model":"tweet-summary-1","prompt":"x"}"#[..])
        );
        let unchanged = route(
            &r,
            "/v1/completions",
            Some(r#"{"model":"same","prompt":"x"}"#),
        )
        .unwrap();
        assert_eq!(
            unchanged.body, None,
            "no rewrite when the target equals the model"
        );
        let unknown = route(
            &r,
            "/v1/completions",
            Some(r#"{"model":"base","prompt":"x"}"#),
        )
        .unwrap();
        assert_eq!(unknown.body, None);
        assert!(route(&r, "/v1/models", None).is_ok());

        let codes: &[(&str, &str, u16, &str)] = &[
            ("/v1/completions", "{", 400, "BadRequest"),
            ("/v1/completions", r#"{"prompt":"x"}"#, 400, "BadRequest"),
            (
                "/v1/chat/completions",
                r#"{"model":"m"}"#,
                400,
                "BadRequest",
            ),
        ];
        for (path, body, status, code) in codes {
            let e = route(&r, path, Some(body)).unwrap_err();
            assert_eq!((e.status, e.code), (*status, *code), "{body}");
        }
        let strict = router(true, &["10.0.0.1:8000"]);
        let e = route(
            &strict,
            "/v1/completions",
            Some(r#"{"model":"base","prompt":"x"}"#),
        )
        .unwrap_err();
        assert_eq!((e.status, e.code), (404, "BadConfiguration"));
        let empty = router(false, &[]);
        let e = route(
            &empty,
            "/v1/completions",
            Some(r#"{"model":"m","prompt":"x"}"#),
        )
        .unwrap_err();
        assert_eq!((e.status, e.code), (503, "ServiceUnavailable"));
    }
}
