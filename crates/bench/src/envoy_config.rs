//! Envoy configurations the harness generates (the repo's own are in deploy/local/). Ports 8080
//! (gateway) and 9901 (admin) are rewritten to free ports by the testkit's `EnvoyProcess`.

/// An Envoy with the pods as a static cluster under `policy`.
pub fn static_cluster(pods: &[String], policy: &str) -> String {
    let endpoints: Vec<String> = pods
        .iter()
        .map(|p| {
            let (host, port) = p.rsplit_once(':').unwrap_or((p, "80"));
            format!("              - endpoint: {{address: {{socket_address: {{address: {host}, port_value: {port}}}}}}}")
        })
        .collect();
    let head = listener_head("gateway");
    format!(
        r#"{head}
                route_config:
                  virtual_hosts:
                    - name: pods
                      domains: ["*"]
                      routes: [{{match: {{prefix: "/"}}, route: {{cluster: pods, timeout: 600s}}}}]
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
    - name: pods
      type: STATIC
      lb_policy: {policy}
      connect_timeout: 5s
      per_connection_buffer_limit_bytes: 33554432
      circuit_breakers: {{thresholds: [{{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000}}]}}
      load_assignment:
        cluster_name: pods
        endpoints:
          - lb_endpoints:
{}
"#,
        endpoints.join("\n")
    )
}

/// An Envoy that answers `/metrics` with a vLLM page and everything else with a small completion.
pub fn direct_response_backend(metrics_page: &str) -> String {
    let page = serde_json::to_string(metrics_page).unwrap_or_default();
    let head = listener_head("backend");
    format!(
        r#"{head}
                route_config:
                  virtual_hosts:
                    - name: backend
                      domains: ["*"]
                      routes:
                        - match: {{prefix: "/metrics"}}
                          direct_response: {{status: 200, body: {{inline_string: {page}}}}}
                        - match: {{prefix: "/"}}
                          direct_response: {{status: 200, body: {{inline_string: "{{\"object\":\"text_completion\",\"choices\":[{{\"text\":\"ok\"}}]}}"}}}}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    )
}

/// Admin, and one HTTP listener on 8080 up to its route config (which the caller appends).
fn listener_head(stat_prefix: &str) -> String {
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 9901}}}}
static_resources:
  listeners:
    - name: gateway
      address: {{socket_address: {{address: 127.0.0.1, port_value: 8080}}}}
      per_connection_buffer_limit_bytes: 33554432
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: {stat_prefix}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_configs_validate_with_the_real_envoy() {
        let dir = switchyard_testkit::scratch_dir("bench-envoy-config").unwrap();
        let pods = ["127.0.0.1:8001".to_string(), "127.0.0.1:8002".to_string()];
        for (name, yaml) in [
            ("static.yaml", static_cluster(&pods, "LEAST_REQUEST")),
            (
                "backend.yaml",
                direct_response_backend("vllm:num_requests_running 0\n"),
            ),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, yaml).unwrap();
            let (ok, text) = switchyard_testkit::validate_envoy_config(&path).unwrap();
            assert!(ok, "{name}: {text}");
        }
    }
}
