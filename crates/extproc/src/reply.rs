//! Builders for the `ProcessingResponse` messages the picker sends.

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ImmediateResponse,
    ProcessingResponse, StreamedBodyResponse, TrailersResponse, body_mutation::Mutation,
    processing_response::Response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::Struct;

/// Largest body chunk sent back in FULL_DUPLEX_STREAMED mode (the reference's value; larger
/// chunks broke older pickers and gateways).
pub const MAX_CHUNK: usize = 62_000;

pub fn set_header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

pub fn request_headers(mutation: HeaderMutation, metadata: Option<Struct>) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(Response::RequestHeaders(HeadersResponse {
            response: Some(CommonResponse {
                header_mutation: Some(mutation),
                clear_route_cache: true,
                ..Default::default()
            }),
        })),
        dynamic_metadata: metadata,
        ..Default::default()
    }
}

/// BUFFERED mode: the decision (headers, replaced body) rides on the body reply.
pub fn buffered_request_body(
    mutation: HeaderMutation,
    body: Option<Vec<u8>>,
    metadata: Option<Struct>,
) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(Response::RequestBody(BodyResponse {
            response: Some(CommonResponse {
                header_mutation: Some(mutation),
                body_mutation: body.map(|b| BodyMutation {
                    mutation: Some(Mutation::Body(b)),
                }),
                clear_route_cache: true,
                ..Default::default()
            }),
        })),
        dynamic_metadata: metadata,
        ..Default::default()
    }
}

/// FULL_DUPLEX_STREAMED mode: the body goes back in chunks of at most [`MAX_CHUNK`] bytes.
/// An empty body still yields one (empty) chunk carrying `end_of_stream`. Takes the body by value:
/// the first chunk reuses its buffer, so a body of one chunk is never copied.
pub fn streamed_body(
    mut body: Vec<u8>,
    end_of_stream: bool,
    request: bool,
) -> Vec<ProcessingResponse> {
    let rest: Vec<Vec<u8>> = body
        .get(MAX_CHUNK..)
        .map(|tail| tail.chunks(MAX_CHUNK).map(<[u8]>::to_vec).collect())
        .unwrap_or_default();
    body.truncate(MAX_CHUNK);
    let chunks: Vec<Vec<u8>> = std::iter::once(body).chain(rest).collect();
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let body_response = BodyResponse {
                response: Some(CommonResponse {
                    body_mutation: Some(BodyMutation {
                        mutation: Some(Mutation::StreamedResponse(StreamedBodyResponse {
                            body: chunk,
                            end_of_stream: end_of_stream && i == last,
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                }),
            };
            ProcessingResponse {
                response: Some(if request {
                    Response::RequestBody(body_response)
                } else {
                    Response::ResponseBody(body_response)
                }),
                ..Default::default()
            }
        })
        .collect()
}

pub fn response_headers() -> ProcessingResponse {
    ProcessingResponse {
        response: Some(Response::ResponseHeaders(HeadersResponse::default())),
        ..Default::default()
    }
}

/// A body message acknowledged without change (BUFFERED / STREAMED response bodies).
pub fn body_continue(request: bool) -> ProcessingResponse {
    let r = BodyResponse::default();
    ProcessingResponse {
        response: Some(if request {
            Response::RequestBody(r)
        } else {
            Response::ResponseBody(r)
        }),
        ..Default::default()
    }
}

pub fn trailers(request: bool) -> ProcessingResponse {
    let t = TrailersResponse::default();
    ProcessingResponse {
        response: Some(if request {
            Response::RequestTrailers(t)
        } else {
            Response::ResponseTrailers(t)
        }),
        ..Default::default()
    }
}

/// An error answered by Envoy on the picker's behalf, body `inference error: <Code> - <message>`.
pub fn immediate(status: u16, code: &str, message: &str) -> ProcessingResponse {
    let body = format!("inference error: {code} - {message}");
    let headers = HeaderMutation {
        set_headers: vec![set_header("content-type", "text/plain; charset=utf-8")],
        ..Default::default()
    };
    ProcessingResponse {
        response: Some(Response::ImmediateResponse(ImmediateResponse {
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers: Some(headers),
            body: body.into_bytes(),
            details: format!("switchyard_{}", code.to_ascii_lowercase()),
            ..Default::default()
        })),
        ..Default::default()
    }
}
