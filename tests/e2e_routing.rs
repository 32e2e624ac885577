//! End-to-end routing through a real Envoy 1.40 and the Switchyard binary: load-aware picks,
//! LoRA affinity, traffic splits, the byte-exact model rewrite, client-sent destination headers,
//! stale metrics and empty pools.

mod support;

use support::{ALL_MODES, Mode, StackBuilder, completion, idle};
use switchyard_testkit::StubMetrics;

fn load(waiting: u32, kv_usage: f64) -> StubMetrics {
    StubMetrics {
        waiting,
        kv_usage,
        ..idle()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_loaded_pod_gets_the_requests_and_lora_affinity_breaks_ties() {
    for mode in ALL_MODES {
        let stack = StackBuilder::new(3, mode).start().await;

        // Queue: pod-2 has none waiting.
        stack
            .set_pod_metrics(&[load(4, 0.3), load(0, 0.3), load(9, 0.3)])
            .await;
        for _ in 0..5 {
            let r = stack.post("/v1/completions", completion("base")).await;
            assert_eq!(r.status, 200, "{mode:?}: {}", r.text());
            assert_eq!(r.served_by.as_deref(), Some("pod-2"), "{mode:?} queue");
        }

        // KV cache: pod-3 is emptiest.
        stack
            .set_pod_metrics(&[load(0, 0.9), load(0, 0.7), load(0, 0.2)])
            .await;
        for _ in 0..8 {
            let r = stack.post("/v1/completions", completion("base")).await;
            assert_eq!(r.served_by.as_deref(), Some("pod-3"), "{mode:?} kv");
        }

        // Equal load: the pod already running the adapter wins.
        let mut with_adapter = idle();
        with_adapter.running_adapters = vec!["sql-lora".into()];
        stack.set_pod_metrics(&[idle(), with_adapter, idle()]).await;
        for _ in 0..5 {
            let r = stack.post("/v1/completions", completion("sql-lora")).await;
            assert_eq!(r.served_by.as_deref(), Some("pod-2"), "{mode:?} lora");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_split_80_20_over_1000_requests() {
    let stack = StackBuilder::new(2, Mode::FullDuplex).start().await;
    let mut handles = Vec::new();
    let stack = std::sync::Arc::new(stack);
    for worker in 0..8 {
        let stack = std::sync::Arc::clone(&stack);
        handles.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..125 {
                let r = stack
                    .post("/v1/completions", completion("tweet-summary"))
                    .await;
                assert_eq!(r.status, 200, "worker {worker}: {}", r.text());
                ok += 1;
            }
            ok
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    assert_eq!(total, 1000);
    let mut first = 0;
    let mut second = 0;
    for pod in &stack.pods {
        for req in pod.received() {
            let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
            match v["model"].as_str() {
                Some("tweet-summary-1") => first += 1,
                Some("tweet-summary-2") => second += 1,
                other => panic!("unexpected upstream model {other:?}"),
            }
        }
    }
    assert_eq!(first + second, 1000);
    // Binomial(1000, 0.8): sd 12.6; five sd either side.
    assert!(
        (737..=863).contains(&first),
        "tweet-summary-1 got {first} of 1000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_rewrite_keeps_every_other_byte() {
    for mode in ALL_MODES {
        let stack = StackBuilder::new(1, mode)
            .models("models:\n  - modelName: tweet-summary\n    targetModels: [{name: tweet-summary-1}]\n")
            .start()
            .await;
        // Odd spacing, key order, escapes and a nested "model" key must all survive.
        let body = "{\n  \"prompt\" : \"say \\\"hi\\\" \\u00e9\",\t\"model\" :  \"tweet-summary\" ,\n  \"metadata\":{\"model\":\"tweet-summary\"}, \"max_tokens\":3}";
        let r = stack.post("/v1/completions", body.to_string()).await;
        assert_eq!(r.status, 200, "{mode:?}: {}", r.text());
        let received = stack.pods[0].received();
        let got = &received.last().unwrap().body;
        let want = body.replacen("\"tweet-summary\" ,", "\"tweet-summary-1\" ,", 1);
        assert_eq!(String::from_utf8_lossy(got), want, "{mode:?}");
        // Content-Length is reset to the new length. In FULL_DUPLEX_STREAMED mode Envoy itself
        // drops it and streams the body chunked; a stale length must never reach the pod.
        let upstream = received.last().unwrap();
        match (mode, upstream.header("content-length")) {
            (_, Some(len)) => assert_eq!(len, want.len().to_string(), "{mode:?}"),
            (Mode::FullDuplex | Mode::RequestOnly, None) => {
                assert_eq!(upstream.header("transfer-encoding"), Some("chunked"))
            }
            (Mode::Buffered, None) => panic!("buffered mode must carry content-length"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_destination_header_is_ignored() {
    for mode in ALL_MODES {
        let stack = StackBuilder::new(2, mode).start().await;
        // pod-1 is busy, so Switchyard picks pod-2 whatever the client asks for.
        stack.set_pod_metrics(&[load(9, 0.9), load(0, 0.1)]).await;
        let busy = stack.pods[0].addr().to_string();
        for forged in [busy.as_str(), "203.0.113.7:80"] {
            let r = stack
                .send(
                    stack
                        .client
                        .post(format!("{}/v1/completions", stack.envoy.url()))
                        .header("x-gateway-destination-endpoint", forged)
                        .body(completion("base")),
                )
                .await;
            assert_eq!(r.status, 200, "{mode:?} forged {forged}: {}", r.text());
            assert_eq!(
                r.served_by.as_deref(),
                Some("pod-2"),
                "{mode:?} forged {forged}"
            );
            let last = stack.pods[1].received().pop().unwrap();
            assert_eq!(
                last.header("x-gateway-destination-endpoint"),
                Some(stack.pods[1].addr().to_string().as_str()),
                "upstream sees only the picker's header"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_metrics_still_serve_and_no_endpoints_is_503() {
    let stack = StackBuilder::new(2, Mode::FullDuplex)
        .arg("--metrics-staleness-threshold=200ms")
        .start()
        .await;
    for pod in &stack.pods {
        pod.break_metrics(true);
    }
    // Wait until Switchyard no longer counts any pod as ready (metrics stale or unhealthy).
    for _ in 0..200 {
        let page = stack.switchyard.metrics_page().await.unwrap();
        if page.contains("inference_pool_ready_pods{name=\"test-pool\"} 0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let page = stack.switchyard.metrics_page().await.unwrap();
    assert!(
        page.contains("inference_pool_ready_pods{name=\"test-pool\"} 0"),
        "{page}"
    );
    for _ in 0..10 {
        let r = stack.post("/v1/completions", completion("base")).await;
        assert_eq!(r.status, 200, "fail open: {}", r.text());
    }
    let page = stack.switchyard.metrics_page().await.unwrap();
    assert!(!page.contains("switchyard_fail_open_total 0"), "{page}");

    let empty = StackBuilder::new(0, Mode::FullDuplex).start().await;
    let r = empty.post("/v1/completions", completion("base")).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.text(),
        "inference error: ServiceUnavailable - no ready endpoints in the pool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_requests_go_to_a_ready_endpoint() {
    for mode in ALL_MODES {
        let stack = StackBuilder::new(2, mode).start().await;
        let r = stack
            .send(stack.client.get(format!("{}/v1/models", stack.envoy.url())))
            .await;
        assert_eq!(r.status, 200, "{mode:?}: {}", r.text());
        assert!(r.served_by.is_some());
        assert!(r.text().contains("\"object\":\"list\""));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_thread_runtime_routes_concurrent_requests() {
    // `--worker-threads 1` switches to the current-thread scheduler: the same routing must hold
    // with many ext_proc streams in flight on one thread, large bodies included.
    let stack = StackBuilder::new(2, Mode::RequestOnly)
        .arg("--worker-threads")
        .arg("1")
        .start()
        .await;
    stack.set_pod_metrics(&[load(6, 0.3), load(0, 0.3)]).await;
    let big = format!(
        r#"{{"model":"base","prompt":"{}","max_tokens":4}}"#,
        "x".repeat(200 * 1024)
    );
    let requests = (0..32).map(|i| {
        let body = if i % 4 == 0 {
            big.clone()
        } else {
            completion("base")
        };
        stack.post("/v1/completions", body)
    });
    for r in futures_util::future::join_all(requests).await {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.served_by.as_deref(), Some("pod-2"));
    }
}
