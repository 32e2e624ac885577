//! The repo's Envoy configs are valid for the real Envoy 1.40 (`envoy --mode validate`).

use std::process::Command;

use switchyard_testkit::{envoy_binary, validate_envoy_config};

fn validate(path: &str) -> (bool, String) {
    validate_envoy_config(std::path::Path::new(path)).expect("envoy runs")
}

#[test]
fn repo_envoy_configs_validate() {
    for config in [
        "deploy/local/envoy.yaml",
        "deploy/local/envoy-buffered.yaml",
        "deploy/local/envoy-request-only.yaml",
    ] {
        let path = format!("{}/{config}", env!("CARGO_MANIFEST_DIR"));
        let (ok, text) = validate(&path);
        assert!(ok, "{config}: {text}");
        assert!(text.contains("OK"), "{config}: {text}");
    }
}

#[test]
fn envoy_version_is_1_40() {
    let out = Command::new(envoy_binary().unwrap())
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/1.40."), "{text}");
}

#[test]
fn validation_catches_a_broken_config() {
    // Control: the check can fail. FULL_DUPLEX_STREAMED without trailer SEND is invalid.
    let text = include_str!("../deploy/local/envoy.yaml")
        .replace("request_trailer_mode: SEND", "request_trailer_mode: SKIP");
    let dir = switchyard_testkit::scratch_dir("validate").unwrap();
    let path = dir.join("broken.yaml");
    std::fs::write(&path, text).unwrap();
    let (ok, out) = validate(path.to_str().unwrap());
    assert!(!ok, "a broken config validated: {out}");
}
