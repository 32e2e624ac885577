//! gRPC health on the health port: liveness at once, readiness (and "" and the ext_proc service
//! name) only after the first scrape round.

use std::path::Path;
use std::time::Duration;

use switchyard_testkit::{SwitchyardProcess, scratch_dir};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn status(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> ServingStatus {
    let r = client
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .expect("health check answers")
        .into_inner();
    ServingStatus::try_from(r.status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_first_scrape_round() {
    // A pod that accepts connections and never answers: the first scrape takes the full timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            sockets.push(s);
        }
    });
    let dir = scratch_dir("health").unwrap();
    let yaml = format!("pool:\n  name: p\n  endpoints: [\"{addr}\"]\n");
    let sy = SwitchyardProcess::start(
        Path::new(env!("CARGO_BIN_EXE_switchyard")),
        &yaml,
        &["--metrics-scrape-timeout=4s"],
        &dir,
    )
    .unwrap();
    let mut client = loop {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", sy.health)).unwrap();
        match endpoint.connect().await {
            Ok(channel) => break HealthClient::new(channel),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert_eq!(
        status(&mut client, "liveness").await,
        ServingStatus::Serving
    );
    for service in [
        "readiness",
        "",
        "envoy.service.ext_proc.v3.ExternalProcessor",
    ] {
        assert_eq!(
            status(&mut client, service).await,
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
    // After the (failed) first scrape the round is complete and readiness flips.
    let mut ready = false;
    for _ in 0..200 {
        if status(&mut client, "readiness").await == ServingStatus::Serving {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "readiness never flipped:\n{}", sy.log());
    assert_eq!(
        status(&mut client, "envoy.service.ext_proc.v3.ExternalProcessor").await,
        ServingStatus::Serving
    );
    held.abort();
}

#[tokio::test]
async fn bad_config_is_a_clear_startup_error() {
    let dir = scratch_dir("badcfg").unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(&path, "pool: {name: p, endpoints: [not-an-address]}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config-file")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pool.endpoints[0] \"not-an-address\" is not an ip:port address"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--grpc-port=notaport")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--grpc-port"));
}
