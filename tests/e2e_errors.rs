//! End-to-end bad input through a real Envoy 1.40: each case gets the reference's status and
//! `inference error: <Code> - <message>` body, and the next request still works.

mod support;

use support::{ALL_MODES, Mode, StackBuilder, completion, idle};
use switchyard_testkit::StubMetrics;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_the_picker_keeps_serving() {
    for mode in ALL_MODES {
        let stack = StackBuilder::new(1, mode)
            .arg("--max-request-body-bytes=300000")
            .start()
            .await;
        let oversize = format!(r#"{{"model":"m","prompt":"{}"}}"#, "x".repeat(400_000));
        let cases: Vec<(&str, String, u16, &str)> = vec![
            (
                "/v1/completions",
                "{not json".into(),
                400,
                "inference error: BadRequest - request body is not valid JSON: ",
            ),
            (
                "/v1/completions",
                "[1,2,3]".into(),
                400,
                "inference error: BadRequest - request body must be a JSON object",
            ),
            (
                "/v1/completions",
                r#"{"prompt":"hi"}"#.into(),
                400,
                "inference error: BadRequest - model not found in request body",
            ),
            (
                "/v1/completions",
                r#"{"model":"m"}"#.into(),
                400,
                "inference error: BadRequest - prompt not found in request body",
            ),
            (
                "/v1/chat/completions",
                r#"{"model":"m","prompt":"hi"}"#.into(),
                400,
                "inference error: BadRequest - messages not found in request body",
            ),
            (
                "/v1/completions",
                oversize,
                413,
                "inference error: PayloadTooLarge - request body exceeds the limit of 300000 bytes",
            ),
        ];
        for (path, body, status, prefix) in cases {
            let r = stack.post(path, body.clone()).await;
            assert_eq!(
                r.status,
                status,
                "{mode:?} {path} {:.40}: {}",
                body,
                r.text()
            );
            assert!(
                r.text().starts_with(prefix),
                "{mode:?} {path}: got {:?}",
                r.text()
            );
            let next = stack.post("/v1/completions", completion("m")).await;
            assert_eq!(
                next.status, 200,
                "{mode:?}: picker still serves after {prefix}"
            );
        }
        assert_eq!(
            stack.pods[0].inference_count(),
            6,
            "refused requests never reach a pod"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_models_404_and_sheddable_429_when_saturated() {
    let stack = StackBuilder::new(2, Mode::FullDuplex)
        .yaml("strictModels: true\n")
        .start()
        .await;
    let r = stack
        .post("/v1/completions", completion("unknown-model"))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.text(),
        "inference error: BadConfiguration - model \"unknown-model\" is not served by pool test-pool"
    );

    // Saturate the pool: Sheddable "batch" is shed, Critical "tweet-summary" still served.
    let saturated = StubMetrics {
        waiting: 10,
        kv_usage: 0.95,
        ..idle()
    };
    stack.set_pod_metrics(&[saturated.clone(), saturated]).await;
    let r = stack.post("/v1/completions", completion("batch")).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(
        r.text(),
        "inference error: ResourceExhausted - the pool is saturated and the request is sheddable"
    );
    let r = stack
        .post("/v1/completions", completion("tweet-summary"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    stack.set_pod_metrics(&[idle(), idle()]).await;
    let r = stack.post("/v1/completions", completion("batch")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = stack.switchyard.metrics_page().await.unwrap();
    assert!(
        page.contains("error_code=\"ResourceExhausted\"} 1"),
        "{page}"
    );
    assert!(
        page.contains("error_code=\"BadConfiguration\"} 1"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_pod_in_the_pool_is_avoided() {
    // 127.0.0.1:9 (discard) has nothing listening: its scrapes fail, it turns unhealthy and is
    // left out while a healthy pod exists.
    let mut builder = StackBuilder::new(1, Mode::FullDuplex).extra_endpoint("127.0.0.1:9");
    builder = builder.arg("--metrics-failure-threshold=2");
    let stack = builder.start().await;
    for _ in 0..20 {
        let r = stack.post("/v1/completions", completion("m")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.served_by.as_deref(), Some("pod-1"));
    }
}
