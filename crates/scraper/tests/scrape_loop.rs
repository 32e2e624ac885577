//! The scrape loop against live sockets: metrics are published with their read time, a dead
//! endpoint turns unhealthy only after several failures, and readiness follows the first round.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use switchyard_datastore::Datastore;
use switchyard_scraper::{ScrapeConfig, Scraper};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A minimal HTTP server answering every request with `page`, or 500 while `broken` is set.
async fn serve_page(page: &'static str, broken: Arc<AtomicBool>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let broken = Arc::clone(&broken);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let (status, body) = if broken.load(Ordering::Relaxed) {
                    ("500 Internal Server Error", "")
                } else {
                    ("200 OK", page)
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn publishes_metrics_and_tracks_health() {
    let broken = Arc::new(AtomicBool::new(false));
    let live = serve_page(
        "vllm:num_requests_waiting 3\nvllm:num_requests_running 1\nvllm:kv_cache_usage_perc 0.5\n",
        Arc::clone(&broken),
    )
    .await;
    // A port with nothing listening: bind, read the port, keep the listener but never accept
    // would hang; instead use a closed port from a dropped listener on another address family.
    let dead: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();

    let ds = Arc::new(Datastore::new("pool"));
    ds.set_endpoints([live, dead]);
    let scraper = Scraper::spawn(
        Arc::clone(&ds),
        ScrapeConfig {
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(500),
            failure_threshold: 3,
            ..ScrapeConfig::default()
        },
    );
    wait_for("readiness", || scraper.is_ready()).await;
    let snap = ds.snapshot();
    let live_ep = snap
        .endpoints
        .iter()
        .find(|e| e.addr() == live)
        .unwrap()
        .clone();
    let dead_ep = snap
        .endpoints
        .iter()
        .find(|e| e.addr() == dead)
        .unwrap()
        .clone();
    wait_for("live metrics", || live_ep.metrics().is_some()).await;
    let m = live_ep.metrics().unwrap();
    assert_eq!((m.waiting, m.running, m.kv_usage), (3, 1, 0.5));
    wait_for("dead endpoint unhealthy", || !dead_ep.is_healthy()).await;
    assert!(dead_ep.metrics().is_none());

    // A failing live endpoint goes unhealthy, then recovers on the next success.
    broken.store(true, Ordering::Relaxed);
    wait_for("live endpoint unhealthy", || !live_ep.is_healthy()).await;
    broken.store(false, Ordering::Relaxed);
    wait_for("live endpoint recovered", || live_ep.is_healthy()).await;
}
