//! Per-stream token accounting: reads the model server's `usage` report from the response body
//! as Envoy streams it through the picker (the reference wiring sends response bodies; the
//! request-only wiring does not, and then nothing is counted).

use switchyard_extproc::proto::ProcessingRequest;
use switchyard_extproc::response_chunk;
use switchyard_openai::{Usage, UsageScanner};

/// The usage of one routed request, read from its response.
#[derive(Debug)]
pub struct ResponseUsage {
    pub model: String,
    pub target_model: String,
    scanner: UsageScanner,
    ended: bool,
}

impl ResponseUsage {
    pub fn new(model: String, target_model: String) -> Self {
        Self {
            model,
            target_model,
            scanner: UsageScanner::default(),
            ended: false,
        }
    }

    /// Reads a gateway message; returns the usage once, when the response ends with one.
    pub fn observe(&mut self, msg: &ProcessingRequest) -> Option<Usage> {
        if self.ended {
            return None;
        }
        let (bytes, end) = response_chunk(msg)?;
        self.scanner.feed(bytes, end);
        if end {
            self.ended = true;
            return self.scanner.usage();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_extproc::proto::processing_request::Request;
    use switchyard_extproc::proto::{HttpBody, HttpTrailers};

    fn body(bytes: &[u8], end_of_stream: bool) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(Request::ResponseBody(HttpBody {
                body: bytes.to_vec(),
                end_of_stream,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn reports_once_at_the_end_of_the_response() {
        let mut u = ResponseUsage::new("m".into(), "t".into());
        assert_eq!(
            u.observe(&body(br#"{"usage":{"prompt_tokens":3,"#, false)),
            None
        );
        let done = u.observe(&body(br#""completion_tokens":4}}"#, true));
        assert_eq!(
            done,
            Some(Usage {
                input_tokens: 3,
                output_tokens: 4
            })
        );
        assert_eq!(u.observe(&body(b"", true)), None, "only once");
    }

    #[test]
    fn trailers_end_the_response_too() {
        let mut u = ResponseUsage::new("m".into(), "t".into());
        u.observe(&body(
            br#"{"usage":{"prompt_tokens":8,"completion_tokens":1}}"#,
            false,
        ));
        let trailers = ProcessingRequest {
            request: Some(Request::ResponseTrailers(HttpTrailers::default())),
            ..Default::default()
        };
        assert_eq!(u.observe(&trailers).map(|x| x.input_tokens), Some(8));
    }
}
