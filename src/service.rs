//! The tonic ext_proc service: a thin adapter that feeds each stream's messages to a
//! [`StreamMachine`] and writes its replies back, asking the [`Router`] when a decision is due.

use std::pin::Pin;
use std::sync::Arc;

use switchyard_extproc::proto::external_processor_server::ExternalProcessor;
use switchyard_extproc::proto::{ProcessingRequest, ProcessingResponse};
use switchyard_extproc::{BodyMode, Step, StreamMachine};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

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
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(32);
        let this = self.clone();
        let span = tracing::debug_span!(
            "ext_proc",
            request_id = tracing::field::Empty,
            model = tracing::field::Empty
        );
        tokio::spawn(this.run_stream(inbound, tx).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl PickerService {
    async fn run_stream(
        self,
        mut inbound: Streaming<ProcessingRequest>,
        tx: mpsc::Sender<Result<ProcessingResponse, Status>>,
    ) {
        // Envoy 1.40 announces its body modes in the first message; FULL_DUPLEX_STREAMED is the
        // reference picker's mode and the assumption when nothing is announced.
        let mut machine = StreamMachine::new(self.max_body_bytes, BodyMode::FullDuplexStreamed);
        let mut rng = fastrand::Rng::new();
        loop {
            let msg = match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(status) => {
                    tracing::debug!(%status, "ext_proc stream ended by the gateway");
                    return;
                }
            };
            let replies = match machine.on_message(msg) {
                Ok(Step::Reply(r)) => r,
                Ok(Step::Decide) => {
                    let now = tokio::time::Instant::now().into_std();
                    let (outcome, notes) =
                        self.router.route(machine.route_request(), now, &mut rng);
                    let span = tracing::Span::current();
                    span.record("request_id", notes.request_id.as_str());
                    if let Some(m) = &notes.model {
                        span.record("model", m.as_str());
                    }
                    if let Err(r) = &outcome {
                        tracing::info!(status = r.status, code = r.code, message = %r.message, "request refused");
                    }
                    match machine.decided(outcome) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ext_proc protocol violation; closing stream");
                    let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                    return;
                }
            };
            for reply in replies {
                if tx.send(Ok(reply)).await.is_err() {
                    return; // Envoy went away.
                }
            }
        }
    }
}
