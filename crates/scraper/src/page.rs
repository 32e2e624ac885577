//! A focused Prometheus text-format reader for the handful of series the picker needs.
//!
//! A vLLM page is ~50 KB of which the picker needs six series. Rather than materialising every
//! sample (as a general parser such as `prometheus-parse` does, which the tests use as an oracle),
//! this scans lines, compares the metric name, and parses labels only for the wanted families.

use std::time::Instant;

use switchyard_datastore::{CacheInfo, EndpointMetrics, LoraState};

use crate::Engine;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("page has none of the {engine} load metrics ({waiting}, {running}, KV usage)")]
    NoLoadMetrics {
        engine: &'static str,
        waiting: &'static str,
        running: &'static str,
    },
    #[error("bad sample line {line}: {reason}")]
    BadLine { line: usize, reason: &'static str },
}

/// One sample line split into its parts (labels still raw).
struct Sample<'a> {
    name: &'a str,
    labels: &'a str,
    value: f64,
}

fn split_sample(line: &str) -> Result<Sample<'_>, &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    let (labels, rest) = if line[name_end..].starts_with('{') {
        let close = find_label_end(&line[name_end..]).ok_or("unterminated labels")?;
        (
            &line[name_end + 1..name_end + close],
            &line[name_end + close + 1..],
        )
    } else {
        ("", &line[name_end..])
    };
    let value_text = rest.split_ascii_whitespace().next().ok_or("no value")?;
    let value = parse_value(value_text).ok_or("bad value")?;
    Ok(Sample {
        name,
        labels,
        value,
    })
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// Index of the `}` closing the label set, skipping quoted values (which may contain `}`).
fn find_label_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut in_quotes = false;
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b'}' if !in_quotes => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Value of label `key` in a raw label set (`a="x",b="y"`), unescaped.
fn label<'a>(labels: &'a str, key: &str) -> Option<std::borrow::Cow<'a, str>> {
    let mut rest = labels;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if rest.is_empty() {
            return None;
        }
        let eq = rest.find('=')?;
        let k = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let after = after.strip_prefix('"')?;
        // Find the closing quote, honouring escapes.
        let bytes = after.as_bytes();
        let mut i = 0;
        let mut escaped = false;
        while i < bytes.len() && bytes[i] != b'"' {
            escaped |= bytes[i] == b'\\';
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        let raw = &after[..i.min(after.len())];
        if k == key {
            return Some(if escaped {
                std::borrow::Cow::Owned(
                    raw.replace("\\\"", "\"")
                        .replace("\\n", "\n")
                        .replace("\\\\", "\\"),
                )
            } else {
                std::borrow::Cow::Borrowed(raw)
            });
        }
        rest = &after[(i + 1).min(after.len())..];
    }
}

fn adapter_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Reads an engine's load metrics from a `/metrics` page. Several series of one gauge (several
/// engines behind one server) are summed for counts and averaged for KV usage.
pub fn parse_page(
    page: &str,
    engine: Engine,
    scraped_at: Instant,
) -> Result<EndpointMetrics, PageError> {
    let names = engine.names();
    let mut waiting: Option<f64> = None;
    let mut running: Option<f64> = None;
    // (sum, count) per KV name, so the preferred name wins when both are present.
    let mut kv: [(f64, u32); 2] = [(0.0, 0); 2];
    let mut lora: Option<(f64, LoraState)> = None;
    let mut cache: Option<CacheInfo> = None;

    for (index, line) in page.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Cheap prefilter on the metric name before any parsing.
        let wanted = line.starts_with(names.waiting)
            || line.starts_with(names.running)
            || names.kv_usage.iter().any(|n| line.starts_with(n))
            || names.lora_info.is_some_and(|n| line.starts_with(n))
            || names.cache_info.is_some_and(|n| line.starts_with(n));
        if !wanted {
            continue;
        }
        let sample = split_sample(line).map_err(|reason| PageError::BadLine {
            line: index + 1,
            reason,
        })?;
        let value = sample.value;
        if sample.name == names.waiting {
            *waiting.get_or_insert(0.0) += value;
        } else if sample.name == names.running {
            *running.get_or_insert(0.0) += value;
        } else if let Some(i) = names.kv_usage.iter().position(|n| *n == sample.name) {
            kv[i].0 += value;
            kv[i].1 += 1;
        } else if Some(sample.name) == names.lora_info {
            // The value is a timestamp and old label sets stay on the page: the newest is current.
            if lora.as_ref().is_none_or(|(best, _)| value > *best) {
                let state = LoraState {
                    max_lora: label(sample.labels, "max_lora")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    running: label(sample.labels, "running_lora_adapters")
                        .map(|v| adapter_list(&v))
                        .unwrap_or_default(),
                    waiting: label(sample.labels, "waiting_lora_adapters")
                        .map(|v| adapter_list(&v))
                        .unwrap_or_default(),
                };
                lora = Some((value, state));
            }
        } else if Some(sample.name) == names.cache_info {
            let (bs, nb) = names.cache_labels;
            let block_size = label(sample.labels, bs).and_then(|v| v.parse().ok());
            let num_gpu_blocks = label(sample.labels, nb).and_then(|v| v.parse().ok());
            if let (Some(block_size), Some(num_gpu_blocks)) = (block_size, num_gpu_blocks) {
                cache = Some(CacheInfo {
                    block_size,
                    num_gpu_blocks,
                });
            }
        }
    }

    let kv_usage = kv
        .iter()
        .find(|(_, n)| *n > 0)
        .map(|(sum, n)| sum / f64::from(*n));
    if waiting.is_none() && running.is_none() && kv_usage.is_none() {
        return Err(PageError::NoLoadMetrics {
            engine: engine.as_str(),
            waiting: names.waiting,
            running: names.running,
        });
    }
    let count = |v: Option<f64>| v.filter(|x| x.is_finite()).unwrap_or(0.0).max(0.0) as u32;
    Ok(EndpointMetrics {
        waiting: count(waiting),
        running: count(running),
        kv_usage: kv_usage
            .filter(|x| x.is_finite())
            .unwrap_or(0.0)
            .clamp(0.0, 1.0),
        lora: lora.map(|(_, s)| s),
        cache,
        scraped_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_with_escapes_and_braces() {
        let l = r#"a="x,y",b="say \"hi\" }",c="""#;
        assert_eq!(label(l, "a").as_deref(), Some("x,y"));
        assert_eq!(label(l, "b").as_deref(), Some("say \"hi\" }"));
        assert_eq!(label(l, "c").as_deref(), Some(""));
        assert_eq!(label(l, "d"), None);
    }

    #[test]
    fn old_kv_name_and_multiple_series() {
        let page = "vllm:num_requests_waiting{engine=\"0\"} 2\n\
                    vllm:num_requests_waiting{engine=\"1\"} 3\n\
                    vllm:gpu_cache_usage_perc{engine=\"0\"} 0.5\n\
                    vllm:gpu_cache_usage_perc{engine=\"1\"} 0.7\n";
        let m = parse_page(page, Engine::Vllm, Instant::now()).unwrap();
        assert_eq!(m.waiting, 5);
        assert!((m.kv_usage - 0.6).abs() < 1e-9);
    }

    #[test]
    fn new_kv_name_preferred_over_old() {
        let page = "vllm:gpu_cache_usage_perc 0.9\nvllm:kv_cache_usage_perc 0.1\n";
        let m = parse_page(page, Engine::Vllm, Instant::now()).unwrap();
        assert_eq!(m.kv_usage, 0.1);
    }

    #[test]
    fn sglang_and_trtllm_names() {
        let sg = "sglang:num_queue_reqs{x=\"1\"} 4\nsglang:num_running_reqs 2\nsglang:token_usage 0.25\n\
                  sglang:cache_config_info{page_size=\"16\",num_pages=\"900\"} 1\n";
        let m = parse_page(sg, Engine::Sglang, Instant::now()).unwrap();
        assert_eq!((m.waiting, m.running, m.kv_usage), (4, 2, 0.25));
        assert_eq!(
            m.cache,
            Some(CacheInfo {
                block_size: 16,
                num_gpu_blocks: 900
            })
        );
        let trt = "trtllm_num_requests_waiting 1\ntrtllm_num_requests_running 3\ntrtllm_kv_cache_utilization 0.5\n";
        let m = parse_page(trt, Engine::TrtLlm, Instant::now()).unwrap();
        assert_eq!((m.waiting, m.running, m.kv_usage), (1, 3, 0.5));
    }

    #[test]
    fn pages_without_load_metrics_or_with_broken_lines_are_errors() {
        assert!(matches!(
            parse_page("foo 1\n", Engine::Vllm, Instant::now()),
            Err(PageError::NoLoadMetrics { .. })
        ));
        assert!(matches!(
            parse_page(
                "vllm:num_requests_waiting{a=\"1\" 2\n",
                Engine::Vllm,
                Instant::now()
            ),
            Err(PageError::BadLine { line: 1, .. })
        ));
        assert!(matches!(
            parse_page(
                "vllm:num_requests_waiting abc\n",
                Engine::Vllm,
                Instant::now()
            ),
            Err(PageError::BadLine { .. })
        ));
    }
}
