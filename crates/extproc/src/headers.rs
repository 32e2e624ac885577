//! Reading Envoy's header maps and the system-owned headers a client may never set.

use envoy_types::pb::envoy::config::core::v3::HeaderMap;

/// The header Envoy's ORIGINAL_DST cluster routes on.
pub const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";

/// Request headers owned by the gateway and picker. Client copies are removed so that no client
/// can choose its pod or impersonate the picker. `content-length` is re-set after a body rewrite.
pub const SYSTEM_HEADERS: &[&str] = &[
    DESTINATION_HEADER,
    "x-gateway-destination-endpoint-subset",
    "x-gateway-model-name-rewrite",
    "x-gateway-inference-objective",
    "x-gateway-inference-fairness-id",
    "content-length",
];

/// The request headers the picker cares about, read once from the headers message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub request_id: Option<String>,
    pub content_type: Option<String>,
    /// `x-gateway-inference-objective`, read before the header is stripped.
    pub objective: Option<String>,
    /// System headers the client sent (lower-case names), to be removed.
    pub client_system_headers: Vec<String>,
}

impl RequestHead {
    pub fn from_map(map: Option<&HeaderMap>) -> Self {
        let mut head = RequestHead::default();
        let Some(map) = map else { return head };
        for h in &map.headers {
            // Envoy fills `raw_value`; older versions used `value`.
            let value = if h.raw_value.is_empty() {
                h.value.clone()
            } else {
                String::from_utf8_lossy(&h.raw_value).into_owned()
            };
            let key = h.key.to_ascii_lowercase();
            match key.as_str() {
                ":method" => head.method = value,
                ":path" => head.path = value,
                "x-request-id" if !value.is_empty() => head.request_id = Some(value),
                "content-type" => head.content_type = Some(value),
                "x-gateway-inference-objective" => head.objective = Some(value),
                _ => {}
            }
            if SYSTEM_HEADERS.contains(&key.as_str()) && !head.client_system_headers.contains(&key)
            {
                head.client_system_headers.push(key);
            }
        }
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderValue;

    #[test]
    fn reads_raw_and_plain_values_and_spots_system_headers() {
        let map = HeaderMap {
            headers: vec![
                HeaderValue {
                    key: ":path".into(),
                    raw_value: b"/v1/completions".to_vec(),
                    ..Default::default()
                },
                HeaderValue {
                    key: ":method".into(),
                    value: "POST".into(),
                    ..Default::default()
                },
                HeaderValue {
                    key: "X-Gateway-Destination-Endpoint".into(),
                    raw_value: b"6.6.6.6:80".to_vec(),
                    ..Default::default()
                },
                HeaderValue {
                    key: "content-length".into(),
                    raw_value: b"12".to_vec(),
                    ..Default::default()
                },
            ],
        };
        let head = RequestHead::from_map(Some(&map));
        assert_eq!(head.path, "/v1/completions");
        assert_eq!(head.method, "POST");
        assert_eq!(
            head.client_system_headers,
            vec![DESTINATION_HEADER.to_string(), "content-length".into()]
        );
    }
}
