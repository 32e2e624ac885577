//! The tonic ext_proc service: a thin adapter that feeds each stream's messages to a
//! [`StreamMachine`] and writes its replies back, asking the [`Router`] when a decision is due.

use std::pin::Pin;
use std::sync::Arc;

use std::collections::VecDeque;
use switchyard_extproc::proto::external_processor_server::ExternalProcessor;
use switchyard_extproc::proto::{ProcessingRequest, ProcessingResponse};
use switchyard_extproc::{BodyMode, Step, StreamMachine};

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::response_usage::ResponseUsage;
use crate::router::Router;

/// The ext_proc gRPC service.
#[derive(Debug, Clone)]
pub struct PickerService {
    router: Arc<Router>,
    max_body_bytes: usize,
}

impl PickerService {
    pub fn new(router: Arc<Router>, max_body_bytes: usize) -> Self {
        Self {
            router,
            max_body_bytes,
        }
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for PickerService {
    type ProcessStream = ReplyStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let state = StreamState {
            service: self.clone(),
            inbound: request.into_inner(),
            // Envoy 1.40 announces its body modes in the first message; FULL_DUPLEX_STREAMED is
            // the reference picker's mode and the assumption when nothing is announced.
            machine: StreamMachine::new(self.max_body_bytes, BodyMode::FullDuplexStreamed),
            rng: fastrand::Rng::new(),
            pending: VecDeque::new(),
            done: false,
            usage: None,
            span: tracing::debug_span!(
                "ext_proc",
                request_id = tracing::field::Empty,
                model = tracing::field::Empty
            ),
        };
        // The reply stream drives the state machine itself as tonic polls it: no task or channel
        // per stream.
        let replies = futures_util::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(reply) = st.pending.pop_front() {
                    return Some((reply, st));
                }
                if st.done {
                    return None;
                }
                match st.inbound.message().await {
                    Ok(Some(msg)) => st.handle(msg),
                    Ok(None) => return None,
                    Err(status) => {
                        tracing::debug!(%status, "ext_proc stream ended by the gateway");
                        return None;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// One ext_proc stream: the protocol state and the replies not yet sent.
struct StreamState {
    service: PickerService,
    inbound: Streaming<ProcessingRequest>,
    machine: StreamMachine,
    rng: fastrand::Rng,
    pending: VecDeque<Result<ProcessingResponse, Status>>,
    /// An error was queued: close the stream after sending it.
    done: bool,
    /// Token accounting of the routed request, once it has been routed.
    usage: Option<ResponseUsage>,
    span: tracing::Span,
}

impl StreamState {
    /// Feeds one message to the machine and queues its replies (deciding when it asks).
    fn handle(&mut self, msg: ProcessingRequest) {
        let _entered = self.span.enter();
        if let Some(tracker) = &mut self.usage
            && let Some(usage) = tracker.observe(&msg)
        {
            let router = &self.service.router;
            router.record_usage(&tracker.model, &tracker.target_model, usage);
        }
        let replies = match self.machine.on_message(msg) {
            Ok(Step::Reply(r)) => r,
            Ok(Step::Decide) => {
                let now = tokio::time::Instant::now().into_std();
                let (outcome, notes) =
                    self.service
                        .router
                        .route(self.machine.route_request(), now, &mut self.rng);
                self.span.record("request_id", notes.request_id.as_str());
                if let Some(m) = &notes.model {
                    self.span.record("model", m.as_str());
                }
                match &outcome {
                    Err(r) => {
                        tracing::info!(status = r.status, code = r.code, message = %r.message, "request refused");
                    }
                    // The notes' names move into the token accounting: no copy per request.
                    Ok(_) => {
                        self.usage = notes.model.map(|model| {
                            let target = notes.target_model.unwrap_or_else(|| model.clone());
                            ResponseUsage::new(model, target)
                        });
                    }
                }
                match self.machine.decided(outcome) {
                    Ok(r) => r,
                    Err(e) => {
                        self.pending.push_back(Err(Status::internal(e.to_string())));
                        self.done = true;
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "ext_proc protocol violation; closing stream");
                self.pending
                    .push_back(Err(Status::invalid_argument(e.to_string())));
                self.done = true;
                return;
            }
        };
        self.pending.extend(replies.into_iter().map(Ok));
    }
}
