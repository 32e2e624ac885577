//! The per-stream protocol state machine.

use std::net::IpAddr;

use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HeaderMutation, HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse,
    processing_request::Request,
};

use crate::headers::{DESTINATION_HEADER, RequestHead};
use crate::metadata::{destination_metadata, subset_hint};
use crate::reply;

/// How Envoy sends a body to the picker (from `protocol_config`, first message of the stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// The body is not sent.
    None,
    /// Whole body in one message, after the header reply (older GIE configs).
    Buffered,
    /// Chunks arrive without waiting for replies; the picker owns the body and sends it back.
    FullDuplexStreamed,
}

impl BodyMode {
    fn from_proto(value: i32) -> Self {
        match BodySendMode::try_from(value) {
            Ok(BodySendMode::FullDuplexStreamed) => BodyMode::FullDuplexStreamed,
            Ok(BodySendMode::None) => BodyMode::None,
            // STREAMED, BUFFERED_PARTIAL and GRPC are handled like BUFFERED: every message is
            // acknowledged and the decision rides on the last one.
            _ => BodyMode::Buffered,
        }
    }
}

/// The response-body bytes a gateway message carries, and whether the response ends with them
/// (response trailers end it too, with no bytes). `None` for every other message.
pub fn response_chunk(msg: &ProcessingRequest) -> Option<(&[u8], bool)> {
    match &msg.request {
        Some(Request::ResponseBody(b)) => Some((&b.body, b.end_of_stream)),
        Some(Request::ResponseTrailers(_)) => Some((&[], true)),
        _ => None,
    }
}

/// What the caller must do next.
#[derive(Debug)]
pub enum Step {
    /// Send these replies, in order (possibly none).
    Reply(Vec<ProcessingResponse>),
    /// The request is complete: build a decision from [`StreamMachine::route_request`] and pass
    /// it to [`StreamMachine::decided`].
    Decide,
}

/// Everything the router needs to decide.
#[derive(Debug)]
pub struct RouteRequest<'a> {
    pub head: &'a RequestHead,
    /// `None` when the request has no body (e.g. GET /v1/models).
    pub body: Option<&'a [u8]>,
    pub subset: Option<&'a [IpAddr]>,
}

/// A successful routing decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// `ip:port` (or an ordered comma list) for the destination header and metadata.
    pub destination: String,
    /// A replacement body (model rewritten), or `None` to forward the original bytes.
    pub body: Option<Vec<u8>>,
    /// Extra request headers to set (e.g. a generated `x-request-id`).
    pub set_headers: Vec<(String, String)>,
}

/// A refusal, answered to the client as an ImmediateResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    /// The reference's error code name, e.g. `BadRequest`.
    pub code: &'static str,
    pub message: String,
}

/// Protocol violations by the peer; the stream is closed with a gRPC error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    #[error("ProcessingRequest without a request field")]
    EmptyMessage,
    #[error("{0} arrived out of order")]
    OutOfOrder(&'static str),
    #[error("decided() called while no decision was pending")]
    NoDecisionPending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHeaders,
    ReadingBody,
    Deciding,
    /// The request went upstream; response-path messages follow.
    Forwarded,
    /// An ImmediateResponse was sent; anything further is ignored.
    Rejected,
}

/// State of one ext_proc stream (= one HTTP request).
#[derive(Debug)]
pub struct StreamMachine {
    max_body_bytes: usize,
    default_mode: BodyMode,
    request_mode: BodyMode,
    response_mode: BodyMode,
    phase: Phase,
    head: RequestHead,
    subset: Option<Vec<IpAddr>>,
    body: Vec<u8>,
    has_body: bool,
    /// Request trailers ended the body; their reply follows the decision.
    trailers_pending: bool,
}

impl StreamMachine {
    /// `default_mode` applies when Envoy sends no `protocol_config` (Envoy before 1.33).
    pub fn new(max_body_bytes: usize, default_mode: BodyMode) -> Self {
        Self {
            max_body_bytes,
            default_mode,
            request_mode: default_mode,
            response_mode: BodyMode::None,
            phase: Phase::AwaitHeaders,
            head: RequestHead::default(),
            subset: None,
            body: Vec::new(),
            has_body: false,
            trailers_pending: false,
        }
    }

    pub fn head(&self) -> &RequestHead {
        &self.head
    }

    pub fn request_mode(&self) -> BodyMode {
        self.request_mode
    }

    /// Feeds one message from Envoy.
    pub fn on_message(&mut self, msg: ProcessingRequest) -> Result<Step, MachineError> {
        if let Some(cfg) = msg.protocol_config {
            self.request_mode = BodyMode::from_proto(cfg.request_body_mode);
            self.response_mode = BodyMode::from_proto(cfg.response_body_mode);
        } else if self.phase == Phase::AwaitHeaders {
            self.request_mode = self.default_mode;
            self.response_mode = self.default_mode;
        }
        let request = msg.request.ok_or(MachineError::EmptyMessage)?;
        if self.phase == Phase::Rejected {
            return Ok(Step::Reply(Vec::new()));
        }
        match request {
            Request::RequestHeaders(h) => {
                self.subset = subset_hint(msg.metadata_context.as_ref());
                self.on_request_headers(h)
            }
            Request::RequestBody(b) => self.on_request_body(b),
            Request::RequestTrailers(_) => self.on_request_trailers(),
            Request::ResponseHeaders(_) => {
                self.expect_forwarded("response headers")?;
                Ok(Step::Reply(vec![reply::response_headers()]))
            }
            Request::ResponseBody(b) => {
                self.expect_forwarded("response body")?;
                Ok(Step::Reply(match self.response_mode {
                    BodyMode::FullDuplexStreamed => {
                        reply::streamed_body(b.body, b.end_of_stream, false)
                    }
                    _ => vec![reply::body_continue(false)],
                }))
            }
            Request::ResponseTrailers(_) => {
                self.expect_forwarded("response trailers")?;
                Ok(Step::Reply(vec![reply::trailers(false)]))
            }
        }
    }

    fn expect_forwarded(&self, what: &'static str) -> Result<(), MachineError> {
        if self.phase == Phase::Forwarded {
            Ok(())
        } else {
            Err(MachineError::OutOfOrder(what))
        }
    }

    fn on_request_headers(&mut self, h: HttpHeaders) -> Result<Step, MachineError> {
        if self.phase != Phase::AwaitHeaders {
            return Err(MachineError::OutOfOrder("request headers"));
        }
        self.head = RequestHead::from_map(h.headers.as_ref());
        if h.end_of_stream || self.request_mode == BodyMode::None {
            self.phase = Phase::Deciding;
            return Ok(Step::Decide);
        }
        self.has_body = true;
        self.phase = Phase::ReadingBody;
        match self.request_mode {
            // The header reply cannot wait: Envoy holds the body until it arrives. Strip the
            // client's system headers now; the decision comes with the body reply.
            BodyMode::Buffered => Ok(Step::Reply(vec![reply::request_headers(
                self.strip_mutation(false),
                None,
            )])),
            _ => Ok(Step::Reply(Vec::new())),
        }
    }

    fn on_request_body(&mut self, b: HttpBody) -> Result<Step, MachineError> {
        if self.phase != Phase::ReadingBody {
            return Err(MachineError::OutOfOrder("request body"));
        }
        if self.body.len() + b.body.len() > self.max_body_bytes {
            self.phase = Phase::Rejected;
            self.body = Vec::new();
            let message = format!(
                "request body exceeds the limit of {} bytes",
                self.max_body_bytes
            );
            return Ok(Step::Reply(vec![reply::immediate(
                413,
                "PayloadTooLarge",
                &message,
            )]));
        }
        if self.body.is_empty() {
            // The common single-message body is kept, not copied.
            self.body = b.body;
        } else {
            self.body.extend_from_slice(&b.body);
        }
        if b.end_of_stream {
            self.phase = Phase::Deciding;
            return Ok(Step::Decide);
        }
        Ok(Step::Reply(match self.request_mode {
            BodyMode::FullDuplexStreamed => Vec::new(),
            _ => vec![reply::body_continue(true)],
        }))
    }

    fn on_request_trailers(&mut self) -> Result<Step, MachineError> {
        match self.phase {
            Phase::ReadingBody => {
                self.trailers_pending = true;
                self.phase = Phase::Deciding;
                Ok(Step::Decide)
            }
            Phase::Forwarded => Ok(Step::Reply(vec![reply::trailers(true)])),
            _ => Err(MachineError::OutOfOrder("request trailers")),
        }
    }

    /// The request as the router sees it. Valid while a decision is pending.
    pub fn route_request(&self) -> RouteRequest<'_> {
        RouteRequest {
            head: &self.head,
            body: self.has_body.then_some(self.body.as_slice()),
            subset: self.subset.as_deref(),
        }
    }

    /// Turns the router's answer into the replies, in protocol order.
    pub fn decided(
        &mut self,
        outcome: Result<Decided, Rejection>,
    ) -> Result<Vec<ProcessingResponse>, MachineError> {
        if self.phase != Phase::Deciding {
            return Err(MachineError::NoDecisionPending);
        }
        let decided = match outcome {
            Ok(d) => d,
            Err(r) => {
                self.phase = Phase::Rejected;
                self.body = Vec::new();
                return Ok(vec![reply::immediate(r.status, r.code, &r.message)]);
            }
        };
        self.phase = Phase::Forwarded;
        let original = std::mem::take(&mut self.body);
        let replaced = decided.body.is_some();
        let body = decided.body.unwrap_or(original);
        let metadata = Some(destination_metadata(&decided.destination));

        let mut mutation = self.strip_mutation(self.request_mode == BodyMode::FullDuplexStreamed);
        mutation
            .set_headers
            .push(reply::set_header(DESTINATION_HEADER, &decided.destination));
        for (k, v) in &decided.set_headers {
            mutation.set_headers.push(reply::set_header(k, v));
        }
        if self.has_body {
            mutation
                .set_headers
                .push(reply::set_header("content-length", &body.len().to_string()));
        }

        let mut out = Vec::new();
        match (self.request_mode, self.has_body) {
            (_, false) | (BodyMode::None, _) => {
                out.push(reply::request_headers(mutation, metadata));
            }
            (BodyMode::FullDuplexStreamed, true) => {
                out.push(reply::request_headers(mutation, metadata));
                out.extend(reply::streamed_body(body, !self.trailers_pending, true));
            }
            (BodyMode::Buffered, true) => {
                let replacement = replaced.then_some(body);
                out.push(reply::buffered_request_body(
                    mutation,
                    replacement,
                    metadata,
                ));
            }
        }
        if self.trailers_pending {
            self.trailers_pending = false;
            out.push(reply::trailers(true));
        }
        Ok(out)
    }

    /// Removal of every system header the client sent (except `content-length` unless asked:
    /// it is re-set with the decision).
    fn strip_mutation(&self, include_content_length: bool) -> HeaderMutation {
        HeaderMutation {
            remove_headers: self
                .head
                .client_system_headers
                .iter()
                .filter(|h| include_content_length || h.as_str() != "content-length")
                .cloned()
                .collect(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_CHUNK;
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::ext_proc::v3::{
        HttpTrailers, ProtocolConfiguration, body_mutation::Mutation, processing_response::Response,
    };

    fn headers(eos: bool, extra: &[(&str, &str)], mode: Option<BodySendMode>) -> ProcessingRequest {
        let mut list = vec![(":method", "POST"), (":path", "/v1/completions")];
        list.extend_from_slice(extra);
        ProcessingRequest {
            request: Some(Request::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: list
                        .iter()
                        .map(|(k, v)| HeaderValue {
                            key: k.to_string(),
                            raw_value: v.as_bytes().to_vec(),
                            ..Default::default()
                        })
                        .collect(),
                }),
                end_of_stream: eos,
                ..Default::default()
            })),
            protocol_config: mode.map(|m| ProtocolConfiguration {
                request_body_mode: m as i32,
                response_body_mode: m as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn body(bytes: &[u8], eos: bool) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(Request::RequestBody(HttpBody {
                body: bytes.to_vec(),
                end_of_stream: eos,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn decided(dest: &str, body: Option<&[u8]>) -> Result<Decided, Rejection> {
        Ok(Decided {
            destination: dest.into(),
            body: body.map(<[u8]>::to_vec),
            set_headers: vec![],
        })
    }

    fn replies(step: Step) -> Vec<ProcessingResponse> {
        match step {
            Step::Reply(r) => r,
            Step::Decide => panic!("unexpected Decide"),
        }
    }

    fn streamed_bodies(out: &[ProcessingResponse]) -> Vec<(Vec<u8>, bool)> {
        out.iter()
            .filter_map(|r| match &r.response {
                Some(Response::RequestBody(b)) => {
                    match b
                        .response
                        .as_ref()?
                        .body_mutation
                        .as_ref()?
                        .mutation
                        .as_ref()?
                    {
                        Mutation::StreamedResponse(s) => Some((s.body.clone(), s.end_of_stream)),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn full_duplex_defers_headers_and_chunks_the_body() {
        let mut m = StreamMachine::new(1 << 24, BodyMode::FullDuplexStreamed);
        let step = m
            .on_message(headers(
                false,
                &[("x-gateway-destination-endpoint", "6.6.6.6:1")],
                Some(BodySendMode::FullDuplexStreamed),
            ))
            .unwrap();
        assert!(replies(step).is_empty(), "header reply must be deferred");
        let big = vec![b'a'; 150_000];
        assert!(replies(m.on_message(body(&big[..100_000], false)).unwrap()).is_empty());
        assert!(matches!(
            m.on_message(body(&big[100_000..], true)).unwrap(),
            Step::Decide
        ));
        assert_eq!(m.route_request().body.unwrap().len(), 150_000);
        let out = m.decided(decided("10.0.0.1:8000", None)).unwrap();
        let Some(Response::RequestHeaders(h)) = &out[0].response else {
            panic!("headers first")
        };
        let common = h.response.as_ref().unwrap();
        assert!(common.clear_route_cache);
        let mutation = common.header_mutation.as_ref().unwrap();
        assert!(
            mutation
                .remove_headers
                .contains(&DESTINATION_HEADER.to_string())
        );
        let set: Vec<_> = mutation
            .set_headers
            .iter()
            .map(|h| {
                let h = h.header.as_ref().unwrap();
                (
                    h.key.clone(),
                    String::from_utf8(h.raw_value.clone()).unwrap(),
                )
            })
            .collect();
        assert!(set.contains(&(DESTINATION_HEADER.into(), "10.0.0.1:8000".into())));
        assert!(set.contains(&("content-length".into(), "150000".into())));
        assert!(out[0].dynamic_metadata.is_some());
        let chunks = streamed_bodies(&out);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|(c, _)| c.len() <= MAX_CHUNK));
        assert_eq!(
            chunks.iter().map(|(_, eos)| *eos).collect::<Vec<_>>(),
            vec![false, false, true]
        );
        assert_eq!(chunks.concat_bodies(), big);
        // Response path passes through.
        let resp = ProcessingRequest {
            request: Some(Request::ResponseBody(HttpBody {
                body: b"data: x\n\n".to_vec(),
                end_of_stream: true,
                ..Default::default()
            })),
            ..Default::default()
        };
        let echoed = replies(m.on_message(resp).unwrap());
        assert_eq!(echoed.len(), 1);
    }

    trait Concat {
        fn concat_bodies(&self) -> Vec<u8>;
    }
    impl Concat for Vec<(Vec<u8>, bool)> {
        fn concat_bodies(&self) -> Vec<u8> {
            self.iter().flat_map(|(c, _)| c.clone()).collect()
        }
    }

    #[test]
    fn buffered_replies_headers_at_once_and_decides_on_the_body() {
        let mut m = StreamMachine::new(1 << 24, BodyMode::FullDuplexStreamed);
        let first = replies(
            m.on_message(headers(false, &[], Some(BodySendMode::Buffered)))
                .unwrap(),
        );
        assert!(matches!(
            first[0].response,
            Some(Response::RequestHeaders(_))
        ));
        assert!(matches!(
            m.on_message(body(b"{\"model\":\"a\"}", true)).unwrap(),
            Step::Decide
        ));
        let out = m
            .decided(decided("10.0.0.2:8000", Some(b"{\"model\":\"bb\"}")))
            .unwrap();
        assert_eq!(out.len(), 1);
        let Some(Response::RequestBody(b)) = &out[0].response else {
            panic!("body reply")
        };
        let common = b.response.as_ref().unwrap();
        assert!(matches!(
            common.body_mutation.as_ref().unwrap().mutation,
            Some(Mutation::Body(ref v)) if v == b"{\"model\":\"bb\"}"
        ));
        assert!(common.header_mutation.is_some());
    }

    #[test]
    fn bodiless_request_decides_on_headers() {
        let mut m = StreamMachine::new(1024, BodyMode::FullDuplexStreamed);
        assert!(matches!(
            m.on_message(headers(true, &[], Some(BodySendMode::FullDuplexStreamed)))
                .unwrap(),
            Step::Decide
        ));
        assert!(m.route_request().body.is_none());
        let out = m.decided(decided("10.0.0.1:1", None)).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn oversize_body_is_refused_with_413_and_the_rest_ignored() {
        let mut m = StreamMachine::new(10, BodyMode::FullDuplexStreamed);
        m.on_message(headers(false, &[], Some(BodySendMode::FullDuplexStreamed)))
            .unwrap();
        let out = replies(m.on_message(body(b"0123456789ab", false)).unwrap());
        let Some(Response::ImmediateResponse(ir)) = &out[0].response else {
            panic!("immediate response")
        };
        assert_eq!(ir.status.unwrap().code, 413);
        assert!(
            String::from_utf8_lossy(&ir.body).starts_with("inference error: PayloadTooLarge - ")
        );
        assert!(replies(m.on_message(body(b"x", true)).unwrap()).is_empty());
    }

    #[test]
    fn rejection_becomes_immediate_response() {
        let mut m = StreamMachine::new(1024, BodyMode::FullDuplexStreamed);
        m.on_message(headers(false, &[], None)).unwrap();
        m.on_message(body(b"{", true)).unwrap();
        let out = m
            .decided(Err(Rejection {
                status: 400,
                code: "BadRequest",
                message: "nope".into(),
            }))
            .unwrap();
        let Some(Response::ImmediateResponse(ir)) = &out[0].response else {
            panic!()
        };
        assert_eq!(ir.body, b"inference error: BadRequest - nope");
    }

    #[test]
    fn trailers_end_the_body_and_are_answered_after_it() {
        let mut m = StreamMachine::new(1024, BodyMode::FullDuplexStreamed);
        m.on_message(headers(false, &[], Some(BodySendMode::FullDuplexStreamed)))
            .unwrap();
        m.on_message(body(b"abc", false)).unwrap();
        let t = ProcessingRequest {
            request: Some(Request::RequestTrailers(HttpTrailers::default())),
            ..Default::default()
        };
        assert!(matches!(m.on_message(t).unwrap(), Step::Decide));
        let out = m.decided(decided("1.2.3.4:5", None)).unwrap();
        assert!(matches!(
            out.last().unwrap().response,
            Some(Response::RequestTrailers(_))
        ));
        assert_eq!(streamed_bodies(&out), vec![(b"abc".to_vec(), false)]);
    }

    #[test]
    fn out_of_order_messages_are_errors() {
        let mut m = StreamMachine::new(1024, BodyMode::FullDuplexStreamed);
        assert_eq!(
            m.on_message(body(b"x", true)).unwrap_err(),
            MachineError::OutOfOrder("request body")
        );
        assert_eq!(
            m.decided(decided("1.1.1.1:1", None)).unwrap_err(),
            MachineError::NoDecisionPending
        );
    }
}
