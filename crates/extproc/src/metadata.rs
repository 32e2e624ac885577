//! Dynamic metadata in both directions: the gateway's subset hint in, the decision out.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

use crate::DESTINATION_HEADER;

/// Namespace of the decision in dynamic metadata (read by Envoy's load balancer).
pub const DESTINATION_METADATA_NAMESPACE: &str = "envoy.lb";
/// Namespace and key of the gateway's subset hint.
pub const SUBSET_HINT_NAMESPACE: &str = "envoy.lb.subset_hint";
pub const SUBSET_HINT_KEY: &str = "x-gateway-destination-endpoint-subset";

/// The subset hint as IPs (the reference compares IPs only). `None` when no hint was sent;
/// `Some(empty)` when a hint was sent but lists nothing usable.
pub fn subset_hint(metadata: Option<&Metadata>) -> Option<Vec<IpAddr>> {
    let hint = metadata?
        .filter_metadata
        .get(SUBSET_HINT_NAMESPACE)?
        .fields
        .get(SUBSET_HINT_KEY)?;
    let mut ips = Vec::new();
    let mut push = |text: &str| {
        for part in text.split(',') {
            let part = part.trim();
            let ip = part
                .parse::<SocketAddr>()
                .map(|a| a.ip())
                .or_else(|_| part.parse::<IpAddr>());
            if let Ok(ip) = ip {
                ips.push(ip);
            }
        }
    };
    match &hint.kind {
        Some(Kind::ListValue(list)) => {
            for v in &list.values {
                if let Some(Kind::StringValue(s)) = &v.kind {
                    push(s);
                }
            }
        }
        Some(Kind::StringValue(s)) => push(s),
        _ => {}
    }
    Some(ips)
}

/// `{"envoy.lb": {"x-gateway-destination-endpoint": "<endpoints>"}}`.
pub fn destination_metadata(endpoints: &str) -> Struct {
    let inner = Struct {
        fields: HashMap::from([(DESTINATION_HEADER.to_string(), string_value(endpoints))]),
    };
    Struct {
        fields: HashMap::from([(
            DESTINATION_METADATA_NAMESPACE.to_string(),
            Value {
                kind: Some(Kind::StructValue(inner)),
            },
        )]),
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::ListValue;

    fn hint(value: Value) -> Metadata {
        Metadata {
            filter_metadata: HashMap::from([(
                SUBSET_HINT_NAMESPACE.to_string(),
                Struct {
                    fields: HashMap::from([(SUBSET_HINT_KEY.to_string(), value)]),
                },
            )]),
            ..Default::default()
        }
    }

    #[test]
    fn subset_hint_forms() {
        assert_eq!(subset_hint(None), None);
        assert_eq!(subset_hint(Some(&Metadata::default())), None);
        let list = Value {
            kind: Some(Kind::ListValue(ListValue {
                values: vec![string_value("10.0.0.1:8000"), string_value("10.0.0.2")],
            })),
        };
        assert_eq!(
            subset_hint(Some(&hint(list))),
            Some(vec![
                "10.0.0.1".parse().unwrap(),
                "10.0.0.2".parse().unwrap()
            ])
        );
        let empty = Value {
            kind: Some(Kind::ListValue(ListValue { values: vec![] })),
        };
        assert_eq!(subset_hint(Some(&hint(empty))), Some(vec![]));
    }
}
