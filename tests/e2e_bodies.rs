//! End-to-end body handling through a real Envoy 1.40: large bodies in both body modes, every
//! OpenAI API shape, and SSE streaming responses passing through unchanged.

mod support;

use support::{ALL_MODES, Mode, StackBuilder};

fn big_completion(model: &str, prompt_bytes: usize) -> String {
    // Varied text so that chunk boundaries never line up with a repeating pattern.
    let mut prompt = String::with_capacity(prompt_bytes);
    let mut i = 0u64;
    while prompt.len() < prompt_bytes {
        prompt.push_str(&format!("word{} ", i.wrapping_mul(2654435761) % 100_003));
        i += 1;
    }
    format!(r#"{{"model":"{model}","prompt":"{prompt}","max_tokens":2}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_pass_in_both_modes_with_and_without_rewrite() {
    for mode in ALL_MODES {
        let stack = StackBuilder::new(2, mode).start().await;
        for size in [200 * 1024, 2 * 1024 * 1024] {
            for (model, upstream_model) in [("base", "base"), ("tweet-summary", "")] {
                let body = big_completion(model, size);
                let r = stack.post("/v1/completions", body.clone()).await;
                assert_eq!(r.status, 200, "{mode:?} {size}B {model}: {}", r.text());
                let pod = stack
                    .pods
                    .iter()
                    .find(|p| Some(p.name()) == r.served_by.as_deref())
                    .expect("a pod served it");
                let got = pod.received().pop().unwrap().body;
                if upstream_model.is_empty() {
                    // Split target: only the model value differs.
                    let got = String::from_utf8(got).unwrap();
                    let target = if got.starts_with(r#"{"model":"tweet-summary-1""#) {
                        "tweet-summary-1"
                    } else {
                        "tweet-summary-2"
                    };
                    assert_eq!(
                        got,
                        body.replacen("tweet-summary", target, 1),
                        "{mode:?} {size}"
                    );
                } else {
                    assert!(got == body.as_bytes(), "{mode:?} {size}B body changed");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_shape_passes() {
    for mode in ALL_MODES {
        let stack = StackBuilder::new(1, mode).start().await;
        let cases = [
            (
                "/v1/completions",
                r#"{"model":"m","prompt":["a","b"]}"#,
                "text_completion",
            ),
            (
                "/v1/chat/completions",
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
                "chat.completion",
            ),
            (
                "/v1/embeddings",
                r#"{"model":"m","input":"hello"}"#,
                "\"embedding\"",
            ),
            (
                "/v1/responses",
                r#"{"model":"m","input":"hello"}"#,
                "\"response\"",
            ),
        ];
        for (path, body, marker) in cases {
            let r = stack.post(path, body).await;
            assert_eq!(r.status, 200, "{mode:?} {path}: {}", r.text());
            assert!(r.text().contains(marker), "{mode:?} {path}: {}", r.text());
            let received = stack.pods[0].received().pop().unwrap();
            assert_eq!(received.path, path);
            assert_eq!(received.body, body.as_bytes());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streaming_passes_through() {
    for mode in ALL_MODES {
        let stack = StackBuilder::new(1, mode).start().await;
        let body = r#"{"model":"tweet-summary","prompt":"hi","max_tokens":50,"stream":true,"stream_options":{"include_usage":true}}"#;
        let r = stack.post("/v1/completions", body).await;
        assert_eq!(r.status, 200, "{mode:?}: {}", r.text());
        let text = r.text();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        // 50 token events, one usage event, [DONE].
        assert_eq!(events.len(), 52, "{mode:?}: {text}");
        assert!(events.iter().all(|e| e.starts_with("data: ")));
        assert_eq!(*events.last().unwrap(), "data: [DONE]");
        assert!(
            events[50].contains("\"completion_tokens\":50"),
            "{}",
            events[50]
        );
        assert!(events[0].contains("tok0 "));
    }
}

/// The value of the series `name{labels}` on Switchyard's /metrics page.
fn series_value(page: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_in_and_out_are_counted_from_the_pods_usage_reports() {
    let labels = r#"model_name="base",target_model_name="base""#;
    for mode in ALL_MODES {
        let stack = StackBuilder::new(1, mode).start().await;
        // A JSON completion, then a streamed one whose last chunk carries the usage.
        let plain = r#"{"model":"base","prompt":"count my tokens please","max_tokens":7}"#;
        let r = stack.post("/v1/completions", plain.to_string()).await;
        assert_eq!(r.status, 200, "{mode:?}: {}", r.text());
        let streamed = r#"{"model":"base","prompt":"and these","max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}"#;
        let r = stack.post("/v1/completions", streamed.to_string()).await;
        assert_eq!(r.status, 200, "{mode:?}: {}", r.text());
        assert!(
            r.text().contains("\"usage\""),
            "{mode:?}: the pod reported usage"
        );

        let page = stack.switchyard.metrics_page().await.expect("metrics");
        let count = series_value(&page, "inference_objective_output_tokens_count", labels);
        let output = series_value(&page, "inference_objective_output_tokens_sum", labels);
        let input = series_value(&page, "inference_objective_input_tokens_sum", labels);
        match mode {
            // Only the reference wiring sends response bodies to the picker.
            Mode::FullDuplex => {
                assert_eq!(count, Some(2.0), "{page}");
                assert_eq!(output, Some(12.0), "7 + 5 completion tokens");
                // The stub counts a token per 4 body bytes of what it received.
                let want = (plain.len() / 4 + streamed.len() / 4) as f64;
                assert_eq!(input, Some(want));
            }
            Mode::RequestOnly | Mode::Buffered => {
                assert_eq!(count, None, "{mode:?}: no response reaches the picker");
            }
        }
    }
}
