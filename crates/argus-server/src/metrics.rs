//! Prometheus metrics in the text exposition format: HTTP requests, GraphQL operations,
//! ingestions by outcome, messages fetched and stored.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Mutex, atomic::Ordering},
    time::Duration,
};

use argus_graphql::Metrics as IngestMetrics;

/// (route, method, status) -> (count, total seconds). Every label comes from a fixed set: the
/// registered route patterns (or `unmatched`), [`method_label`], and the statuses the server
/// itself answers with, so no request can add series of its own.
type RequestCounts = BTreeMap<(String, &'static str, u16), (u64, f64)>;

/// The label of an HTTP method: a standard method's name, `other` for anything else (a
/// made-up method must not become a series of its own).
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::PATCH, "PATCH"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN.iter().find(|(m, _)| m == method).map_or("other", |(_, name)| name)
}

/// Counters kept by the HTTP layer.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    requests: Mutex<RequestCounts>,
    /// (kind, outcome) -> count.
    operations: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl HttpMetrics {
    /// Counts one HTTP request.
    pub fn record_request(&self, route: &str, method: &'static str, status: u16, elapsed: Duration) {
        if let Ok(mut map) = self.requests.lock() {
            let entry = map.entry((route.to_owned(), method, status)).or_default();
            entry.0 += 1;
            entry.1 += elapsed.as_secs_f64();
        }
    }

    /// Counts one GraphQL operation (`query` or `mutation`), `ok` or `error`.
    pub fn record_operation(&self, kind: &'static str, outcome: &'static str) {
        if let Ok(mut map) = self.operations.lock() {
            *map.entry((kind, outcome)).or_default() += 1;
        }
    }

    /// Renders every metric.
    pub fn render(&self, ingest: &IngestMetrics) -> String {
        let mut out = String::with_capacity(2048);
        out.push_str("# HELP argus_http_requests_total HTTP requests handled.\n");
        out.push_str("# TYPE argus_http_requests_total counter\n");
        let requests = self.requests.lock().map(|m| m.clone()).unwrap_or_default();
        for ((route, method, status), (count, _)) in &requests {
            let _ = writeln!(
                out,
                "argus_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {count}",
                escape(route),
                escape(method)
            );
        }
        out.push_str("# HELP argus_http_request_duration_seconds Time spent handling HTTP requests.\n");
        out.push_str("# TYPE argus_http_request_duration_seconds summary\n");
        let mut by_route: BTreeMap<(&str, &str), (u64, f64)> = BTreeMap::new();
        for ((route, method, _), (count, secs)) in &requests {
            let e = by_route.entry((route, method)).or_default();
            e.0 += count;
            e.1 += secs;
        }
        for ((route, method), (count, secs)) in by_route {
            let labels = format!("route=\"{}\",method=\"{}\"", escape(route), escape(method));
            let _ = writeln!(out, "argus_http_request_duration_seconds_sum{{{labels}}} {secs}");
            let _ = writeln!(out, "argus_http_request_duration_seconds_count{{{labels}}} {count}");
        }
        out.push_str("# HELP argus_graphql_operations_total GraphQL operations executed.\n");
        out.push_str("# TYPE argus_graphql_operations_total counter\n");
        let operations = self.operations.lock().map(|m| m.clone()).unwrap_or_default();
        for ((kind, outcome), count) in operations {
            let _ = writeln!(
                out,
                "argus_graphql_operations_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {count}"
            );
        }
        out.push_str("# HELP argus_ingestions_total Ingestions run, by outcome.\n");
        out.push_str("# TYPE argus_ingestions_total counter\n");
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "argus_ingestions_total{{outcome=\"succeeded\"}} {}",
            load(&ingest.ingestions_succeeded)
        );
        let _ =
            writeln!(out, "argus_ingestions_total{{outcome=\"failed\"}} {}", load(&ingest.ingestions_failed));
        // Refused before anything ran (scope, malformed input, capacity, caller rate): counted
        // here and logged, never in the audit trail.
        let _ = writeln!(
            out,
            "argus_ingestions_total{{outcome=\"refused\"}} {}",
            load(&ingest.ingestions_refused)
        );
        out.push_str("# HELP argus_messages_fetched_total Message events received from homeservers.\n");
        out.push_str("# TYPE argus_messages_fetched_total counter\n");
        let _ = writeln!(out, "argus_messages_fetched_total {}", load(&ingest.messages_fetched));
        out.push_str("# HELP argus_messages_stored_total Messages newly stored.\n");
        out.push_str("# TYPE argus_messages_stored_total counter\n");
        let _ = writeln!(out, "argus_messages_stored_total {}", load(&ingest.messages_stored));
        out
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Whether a GraphQL document's selected operation is a mutation (a lexical look: the
/// operation keyword of the named operation, or of the first one).
pub(crate) fn operation_kind(query: &str, operation_name: Option<&str>) -> &'static str {
    let mut tokens = Vec::new();
    let mut chars = query.char_indices().peekable();
    let mut depth = 0_i32;
    while let Some((i, c)) = chars.next() {
        match c {
            '#' => {
                for (_, c) in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for (_, c) in chars.by_ref() {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => {}
                    }
                }
            }
            '{' | '(' => depth += 1,
            '}' | ')' => depth -= 1,
            c if depth == 0 && (c.is_alphabetic() || c == '_') => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_alphanumeric() || d == '_' {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(&query[i..end]);
            }
            _ => {}
        }
    }
    let mut first = None;
    for (k, token) in tokens.iter().enumerate() {
        if matches!(*token, "query" | "mutation" | "subscription") {
            let name = tokens.get(k + 1).copied();
            first.get_or_insert(*token);
            if operation_name.is_some() && name == operation_name {
                return if *token == "mutation" { "mutation" } else { "query" };
            }
        }
    }
    if first == Some("mutation") { "mutation" } else { "query" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_kinds() {
        assert_eq!(operation_kind("{ tchapStats { totalRooms } }", None), "query");
        assert_eq!(
            operation_kind("mutation($i: X!) { ingestTchapRoom(input: $i) { messagesStored } }", None),
            "mutation"
        );
        assert_eq!(operation_kind("# mutation\nquery Q { a }", None), "query");
        assert_eq!(operation_kind("query A { a } mutation B { b }", Some("B")), "mutation");
        assert_eq!(operation_kind("query A { a } mutation B { b }", Some("A")), "query");
        assert_eq!(operation_kind("query A(\"mutation\") { a }", None), "query");
    }

    #[test]
    fn renders_prometheus_text() {
        let m = HttpMetrics::default();
        m.record_request("/graphql", "POST", 200, Duration::from_millis(3));
        m.record_operation("query", "ok");
        let ingest = IngestMetrics::default();
        ingest.ingestions_failed.fetch_add(2, Ordering::Relaxed);
        let text = m.render(&ingest);
        assert!(
            text.contains("argus_http_requests_total{route=\"/graphql\",method=\"POST\",status=\"200\"} 1")
        );
        assert!(text.contains("argus_graphql_operations_total{kind=\"query\",outcome=\"ok\"} 1"));
        assert!(text.contains("argus_ingestions_total{outcome=\"failed\"} 2"));
        assert!(text.contains("argus_messages_stored_total 0"));
    }
}
