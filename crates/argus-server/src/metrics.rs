//! Prometheus metrics (OpenMetrics text, `prometheus-client`): HTTP requests and their
//! latency histogram, GraphQL operations and open subscriptions, ingestions by outcome, messages fetched and stored,
//! the fusion outbox (pending, parked, age of the oldest waiting row), and the process (CPU,
//! memory, file descriptors, threads, start time).

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use argus_graphql::Services;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// The content type of [`HttpMetrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

/// Every label comes from a fixed set: the registered route patterns (or `unmatched`),
/// [`method_label`], and the statuses the server itself answers with, so no request can add
/// series of its own.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    kind: &'static str,
    outcome: &'static str,
}

/// The request-latency buckets: 1 ms to ~16 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The server's metrics registry.
#[derive(Debug)]
pub struct HttpMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    operations: Family<OperationLabels, Counter>,
}

impl HttpMetrics {
    /// The registry, with the counters of `services` (ingestions, messages) and its store's
    /// outbox read on each scrape.
    pub fn new(services: Arc<Services>) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let operations = Family::<OperationLabels, Counter>::default();
        registry.register("argus_http_requests", "HTTP requests handled", requests.clone());
        registry.register(
            "argus_http_request_duration_seconds",
            "Time spent handling HTTP requests",
            durations.clone(),
        );
        registry.register("argus_graphql_operations", "GraphQL operations executed", operations.clone());
        registry.register_collector(Box::new(ServiceCollector { services }));
        registry.register_collector(Box::new(ProcessCollector));
        Self { registry, requests, durations, operations }
    }

    /// Counts one HTTP request.
    pub fn record_request(&self, route: &str, method: &'static str, status: u16, elapsed: Duration) {
        self.requests.get_or_create(&RequestLabels { route: route.to_owned(), method, status }).inc();
        self.durations
            .get_or_create(&RouteLabels { route: route.to_owned(), method })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one GraphQL operation (`query` or `mutation`), `ok` or `error`.
    pub fn record_operation(&self, kind: &'static str, outcome: &'static str) {
        self.operations.get_or_create(&OperationLabels { kind, outcome }).inc();
    }

    /// Renders every metric (reads the outbox: call it off the async workers).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("the metrics could not be encoded");
        }
        out
    }
}

/// Ingestion counters and the outbox, read from the services on each scrape.
#[derive(Debug)]
struct ServiceCollector {
    services: Arc<Services>,
}

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> std::fmt::Result {
    ConstCounter::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: i64) -> std::fmt::Result {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for ServiceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let m = &self.services.app.metrics;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        {
            let mut family = encoder.encode_descriptor(
                "argus_ingestions",
                "Ingestions run, by outcome (refused: before anything ran, never audited)",
                None,
                MetricType::Counter,
            )?;
            for (outcome, value) in [
                ("succeeded", load(&m.ingestions_succeeded)),
                ("failed", load(&m.ingestions_failed)),
                ("refused", load(&m.ingestions_refused)),
            ] {
                ConstCounter::new(value).encode(family.encode_family(&[("outcome", outcome)])?)?;
            }
        }
        counter(
            &mut encoder,
            "argus_messages_fetched",
            "Message events received from homeservers",
            load(&m.messages_fetched),
        )?;
        counter(&mut encoder, "argus_messages_stored", "Messages newly stored", load(&m.messages_stored))?;
        gauge(
            &mut encoder,
            "argus_graphql_subscriptions_open",
            "GraphQL subscriptions open (over WebSocket)",
            i64::try_from(self.services.open_subscriptions()).unwrap_or(i64::MAX),
        )?;
        match self.services.app.store.outbox_gauges() {
            Ok(outbox) => {
                gauge(
                    &mut encoder,
                    "argus_outbox_pending",
                    "Fusion outbox rows waiting for delivery",
                    outbox.pending,
                )?;
                gauge(&mut encoder, "argus_outbox_parked", "Fusion outbox rows given up on", outbox.parked)?;
                let age = outbox
                    .oldest_pending
                    .map_or(0, |t| (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0));
                gauge(
                    &mut encoder,
                    "argus_outbox_oldest_pending_age_seconds",
                    "Age of the oldest fusion outbox row waiting for delivery (0: none)",
                    age,
                )?;
            }
            Err(e) => tracing::warn!(error = %e, "the outbox gauges could not be read"),
        }
        Ok(())
    }
}

/// The process's own figures, from `/proc/self` (Linux; nothing elsewhere).
#[derive(Debug)]
struct ProcessCollector;

/// Clock ticks per second of `/proc` times (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return Ok(());
        };
        // The fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            let seconds = (utime + stime) as f64 / USER_HZ;
            ConstCounter::new(seconds).encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?)?;
        }
        if let Some(threads) = field(20) {
            gauge(&mut encoder, "process_threads", "Number of OS threads in the process", threads as i64)?;
        }
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<u64>().ok())
        });
        if let (Some(boot), Some(start)) = (boot, field(22)) {
            ConstGauge::new(boot as f64 + start as f64 / USER_HZ).encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                None,
                MetricType::Gauge,
            )?)?;
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let kib = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<i64>().ok())
            };
            if let Some(rss) = kib("VmRSS:") {
                gauge(
                    &mut encoder,
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    rss * 1024,
                )?;
            }
            if let Some(vsize) = kib("VmSize:") {
                gauge(
                    &mut encoder,
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes",
                    vsize * 1024,
                )?;
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(&mut encoder, "process_open_fds", "Number of open file descriptors", fds.count() as i64)?;
        }
        Ok(())
    }
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
    fn renders_openmetrics_text() {
        let store = argus_store::Store::open("sqlite::memory:").unwrap_or_else(|e| panic!("{e}"));
        let connector = argus_matrix::Connector::new(argus_matrix::ConnectorConfig::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let services = Arc::new(Services::new(store, connector));
        let m = HttpMetrics::new(Arc::clone(&services));
        m.record_request("/graphql", "POST", 200, Duration::from_millis(3));
        m.record_operation("query", "ok");
        services.app.metrics.ingestions_failed.fetch_add(2, Ordering::Relaxed);
        let text = m.render();
        assert!(
            text.contains("argus_http_requests_total{route=\"/graphql\",method=\"POST\",status=\"200\"} 1")
        );
        // A real histogram: the 3 ms request is above the 2 ms bucket and in the 4 ms one.
        let bucket = |le: &str| {
            format!(
                "argus_http_request_duration_seconds_bucket{{le=\"{le}\",route=\"/graphql\",method=\"POST\"}}"
            )
        };
        assert!(text.contains(&format!("{} 0", bucket("0.002"))), "{text}");
        assert!(text.contains(&format!("{} 1", bucket("0.004"))), "{text}");
        assert!(text.contains("argus_graphql_operations_total{kind=\"query\",outcome=\"ok\"} 1"));
        assert!(text.contains("argus_ingestions_total{outcome=\"failed\"} 2"));
        assert!(text.contains("argus_messages_stored_total 0"));
        assert!(text.contains("argus_outbox_pending 0"), "{text}");
        assert!(text.contains("argus_outbox_oldest_pending_age_seconds 0"), "{text}");
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
