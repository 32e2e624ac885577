//! Token usage read from a response body as the gateway streams it past: the OpenAI `usage` object
//! of a JSON response, or of the final SSE chunk when the client asked for
//! `stream_options.include_usage`.
//!
//! Responses are not parsed: the scanner looks for the usage keys (`prompt_tokens` /
//! `completion_tokens`, or the Responses API's `input_tokens` / `output_tokens`) and reads the
//! number after each, across chunk boundaries, keeping the last value seen. A key inside a JSON
//! string is escaped (`\"prompt_tokens\"`), so generated text cannot fake one.

/// Tokens of one request, as the model server counted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

const INPUT_KEYS: [&[u8]; 2] = [b"\"prompt_tokens\"", b"\"input_tokens\""];
const OUTPUT_KEYS: [&[u8]; 2] = [b"\"completion_tokens\"", b"\"output_tokens\""];
/// Bytes carried over between chunks: a key, its colon, spaces and a 20-digit number fit.
const CARRY: usize = 64;

/// Incremental usage reader for one response body.
#[derive(Debug, Default)]
pub struct UsageScanner {
    /// The last bytes of the previous chunk, for keys and numbers cut by a chunk boundary.
    carry: Vec<u8>,
    input: Option<u64>,
    output: Option<u64>,
}

/// Where a key's number stands in a buffer.
enum Number {
    Complete(u64),
    /// Digits run to the end of the buffer: the next chunk may continue them.
    Cut,
    Absent,
}

fn number_after(buf: &[u8], mut at: usize) -> Number {
    while buf.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
        at += 1;
    }
    if buf.get(at) != Some(&b':') {
        return if at >= buf.len() {
            Number::Cut
        } else {
            Number::Absent
        };
    }
    at += 1;
    while buf.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
        at += 1;
    }
    let digits = buf[at.min(buf.len())..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if at + digits >= buf.len() {
        return Number::Cut;
    }
    if digits == 0 {
        return Number::Absent;
    }
    std::str::from_utf8(&buf[at..at + digits])
        .ok()
        .and_then(|d| d.parse().ok())
        .map_or(Number::Absent, Number::Complete)
}

/// The last complete value of any of `keys` in `buf`; `final_chunk` accepts a number that ends
/// the buffer.
fn last_value(buf: &[u8], keys: &[&[u8]], final_chunk: bool) -> Option<u64> {
    let mut found = None;
    for key in keys {
        let mut from = 0;
        while let Some(pos) = find(&buf[from..], key).map(|p| p + from) {
            from = pos + 1;
            if pos > 0 && buf[pos - 1] == b'\\' {
                continue; // inside a JSON string
            }
            match number_after(buf, pos + key.len()) {
                Number::Complete(n) => found = Some((pos, n)),
                Number::Cut if final_chunk => {
                    let digits: Vec<u8> = buf[pos + key.len()..]
                        .iter()
                        .copied()
                        .filter(u8::is_ascii_digit)
                        .collect();
                    if let Some(n) = std::str::from_utf8(&digits)
                        .ok()
                        .and_then(|d| d.parse().ok())
                    {
                        found = Some((pos, n));
                    }
                }
                _ => {}
            }
        }
    }
    found.map(|(_, n)| n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while let Some(offset) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + offset;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

impl UsageScanner {
    /// Reads one chunk of the response body; `end_of_stream` marks the last one.
    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool) {
        // The carried bytes plus this chunk: keys cut by the boundary are whole again. Numbers
        // cut at the end are read again from the carry next time.
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(chunk);
        if let Some(n) = last_value(&window, &INPUT_KEYS, end_of_stream) {
            self.input = Some(n);
        }
        if let Some(n) = last_value(&window, &OUTPUT_KEYS, end_of_stream) {
            self.output = Some(n);
        }
        let keep = window.len().saturating_sub(CARRY);
        window.drain(..keep);
        self.carry = window;
    }

    /// The usage seen so far: input tokens are required, output tokens default to 0
    /// (embeddings report none).
    pub fn usage(&self) -> Option<Usage> {
        self.input.map(|input_tokens| Usage {
            input_tokens,
            output_tokens: self.output.unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Option<Usage> {
        let mut s = UsageScanner::default();
        for (i, c) in chunks.iter().enumerate() {
            s.feed(c, i + 1 == chunks.len());
        }
        s.usage()
    }

    fn usage(input_tokens: u64, output_tokens: u64) -> Option<Usage> {
        Some(Usage {
            input_tokens,
            output_tokens,
        })
    }

    #[test]
    fn json_response_in_one_piece() {
        let body = br#"{"id":"x","choices":[{"text":"ok"}],"usage":{"prompt_tokens":12,"total_tokens":112,"completion_tokens":100,"prompt_tokens_details":null}}"#;
        assert_eq!(scan(&[body]), usage(12, 100));
    }

    #[test]
    fn every_split_point_gives_the_same_answer() {
        let body = br#"{"choices":[{"text":"a"}],"usage": {"prompt_tokens" : 4096, "completion_tokens": 73}}"#;
        for cut in 1..body.len() {
            assert_eq!(
                scan(&[&body[..cut], &body[cut..]]),
                usage(4096, 73),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn sse_stream_with_usage_in_the_final_chunk() {
        let chunks: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("data: {{\"choices\":[{{\"text\":\"t{i}\"}}],\"usage\":null}}\n\n").into_bytes())
            .chain([
                b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":50}}\n\n".to_vec(),
                b"data: [DONE]\n\n".to_vec(),
            ])
            .collect();
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        assert_eq!(scan(&refs), usage(9, 50));
    }

    #[test]
    fn responses_api_and_embeddings_keys() {
        assert_eq!(
            scan(&[br#"{"usage":{"input_tokens":7,"output_tokens":3,"input_tokens_details":{}}}"#]),
            usage(7, 3)
        );
        assert_eq!(
            scan(&[br#"{"data":[],"usage":{"prompt_tokens":5,"total_tokens":5}}"#]),
            usage(5, 0)
        );
    }

    #[test]
    fn generated_text_cannot_fake_usage_and_no_usage_is_none() {
        let body = br#"{"choices":[{"text":"say \"prompt_tokens\": 99"}]}"#;
        assert_eq!(scan(&[body]), None);
        assert_eq!(
            scan(&[b"data: {\"choices\":[]}\n\n", b"data: [DONE]\n\n"]),
            None
        );
    }
}
