//! Logs and metrics: tracing set-up, every metric the service exports (names live here and
//! nowhere else), and the Prometheus text rendering behind `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format `{other}`, expected `text` or `json`"
            )),
        }
    }
}

/// Installs the global tracing subscriber. `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // A second init (tests start many servers in one process) is harmless: ignore it.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Which listener served a request.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub listener: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheName {
    pub cache: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Every metric of the process, registered once at start-up.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<StatusLabels, Counter>,
    pub latency: Family<ListenerLabel, Histogram>,
    pub cache_lookups: Family<CacheLabels, Counter>,
    pub cache_bytes: Family<CacheName, Gauge>,
    pub stage_seconds: Family<StageLabel, Histogram>,
    pub queue_depth: Gauge,
    pub transforms_running: Gauge,
    pub renders: Counter,
    pub storage_fetches: Counter,
    /// Cache purges applied on announcements from other nodes.
    pub remote_purges: Counter,
    pub storage_errors: Family<KindLabel, Counter>,
    pub shed: Counter,
    /// How long the edge took to answer a request it refused as overloaded (503).
    pub shed_seconds: Histogram,
    /// Image decodes run by renders (a srcset burst shares one).
    pub decodes: Counter,
    /// Renders that used a decode run by another render of the same source.
    pub decodes_shared: Counter,
    /// Renders that started from a reduced copy instead of the original.
    pub derivative_renders: Counter,
    /// Files whose reduced copies were built (or found unneeded).
    pub derivatives_built: Counter,
    /// Attempts to build reduced copies that failed.
    pub derivative_failures: Counter,
    /// Files whose reduced copies are not built yet.
    pub derivative_backlog: Gauge,
    /// The memory budget, in bytes.
    pub memory_budget: Gauge,
    /// Bytes reserved from the memory budget by running and queued work.
    pub memory_reserved: Gauge,
    /// Renders refused because they need more than the whole memory budget.
    pub memory_refused: Counter,
    /// Renders shed because their memory did not fit in time.
    pub memory_waits_expired: Counter,
    request_ids: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("imgedge");
        let requests = Family::<StatusLabels, Counter>::default();
        let latency = Family::<ListenerLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let cache_lookups = Family::<CacheLabels, Counter>::default();
        let cache_bytes = Family::<CacheName, Gauge>::default();
        let stage_seconds = Family::<StageLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let queue_depth = Gauge::default();
        let transforms_running = Gauge::default();
        let renders = Counter::default();
        let storage_fetches = Counter::default();
        let remote_purges = Counter::default();
        let storage_errors = Family::<KindLabel, Counter>::default();
        let shed = Counter::default();
        let shed_seconds = latency_histogram();
        let decodes = Counter::default();
        let decodes_shared = Counter::default();
        let derivative_renders = Counter::default();
        let derivatives_built = Counter::default();
        let derivative_failures = Counter::default();
        let derivative_backlog = Gauge::default();
        let memory_budget = Gauge::default();
        let memory_reserved = Gauge::default();
        let memory_refused = Counter::default();
        let memory_waits_expired = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests by listener and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request head to response head",
            latency.clone(),
        );
        registry.register(
            "cache_lookups",
            "Cache lookups by cache and result (hit|miss)",
            cache_lookups.clone(),
        );
        registry.register(
            "cache_bytes",
            "Approximate bytes held per cache",
            cache_bytes.clone(),
        );
        registry.register(
            "transform_stage_seconds",
            "Transform time by stage (decode|transform|encode)",
            stage_seconds.clone(),
        );
        registry.register(
            "transform_queue_depth",
            "Transforms admitted and waiting for a CPU slot",
            queue_depth.clone(),
        );
        registry.register(
            "transforms_running",
            "Transforms running on CPU threads",
            transforms_running.clone(),
        );
        registry.register("renders", "Completed image renders", renders.clone());
        registry.register(
            "storage_fetches",
            "Originals read from storage",
            storage_fetches.clone(),
        );
        registry.register(
            "remote_purges",
            "Cache purges applied on change announcements from other nodes",
            remote_purges.clone(),
        );
        registry.register(
            "storage_errors",
            "Storage failures by kind (timeout|io)",
            storage_errors.clone(),
        );
        registry.register(
            "load_shed",
            "Transforms refused with 503: the queue overflowed, or a waiter went stale while overloaded",
            shed.clone(),
        );
        registry.register(
            "shed_answer_seconds",
            "Time the edge took to answer a request refused with 503 server/overloaded, from its headers to the answer",
            shed_seconds.clone(),
        );
        registry.register(
            "decodes",
            "Image decodes run for renders (concurrent renders of one source share one)",
            decodes.clone(),
        );
        registry.register(
            "decodes_shared",
            "Renders that used another concurrent render's decode of the same source",
            decodes_shared.clone(),
        );
        registry.register(
            "derivative_renders",
            "Renders that started from a reduced copy (derivative) instead of the original",
            derivative_renders.clone(),
        );
        registry.register(
            "derivatives_built",
            "Files whose reduced copies were built (or found unneeded)",
            derivatives_built.clone(),
        );
        registry.register(
            "derivative_failures",
            "Failed attempts to build a file's reduced copies",
            derivative_failures.clone(),
        );
        registry.register(
            "derivative_backlog",
            "Files whose reduced copies are not built yet",
            derivative_backlog.clone(),
        );
        registry.register(
            "memory_budget_bytes",
            "The memory budget renders and derivative builds reserve from",
            memory_budget.clone(),
        );
        registry.register(
            "memory_reserved_bytes",
            "Bytes of the memory budget reserved by running and queued work",
            memory_reserved.clone(),
        );
        registry.register(
            "memory_refused",
            "Renders refused with 422: they need more memory than the whole budget",
            memory_refused.clone(),
        );
        registry.register(
            "memory_waits_expired",
            "Renders shed with 503 because their memory did not fit in time",
            memory_waits_expired.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            cache_lookups,
            cache_bytes,
            stage_seconds,
            queue_depth,
            transforms_running,
            renders,
            storage_fetches,
            remote_purges,
            storage_errors,
            shed,
            shed_seconds,
            decodes,
            decodes_shared,
            derivative_renders,
            derivatives_built,
            derivative_failures,
            derivative_backlog,
            memory_budget,
            memory_reserved,
            memory_refused,
            memory_waits_expired,
            request_ids: AtomicU64::new(1),
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("invariant: writing to a String cannot fail");
        out
    }

    pub fn observe_request(&self, listener: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&StatusLabels { listener, status })
            .inc();
        self.latency
            .get_or_create(&ListenerLabel { listener })
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_shed_answer(&self, elapsed: Duration) {
        self.shed_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn cache_lookup(&self, cache: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache_lookups
            .get_or_create(&CacheLabels { cache, result })
            .inc();
    }

    pub fn observe_stage(&self, stage: &'static str, elapsed: Duration) {
        self.stage_seconds
            .get_or_create(&StageLabel { stage })
            .observe(elapsed.as_secs_f64());
    }

    /// A process-unique request id, short enough to read in logs.
    pub fn next_request_id(&self) -> String {
        format!("{:x}", self.request_ids.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family() {
        let m = Metrics::new();
        m.observe_request("cdn", 200, Duration::from_millis(3));
        m.cache_lookup("variant", true);
        m.observe_stage("decode", Duration::from_millis(1));
        m.renders.inc();
        let text = m.render();
        for name in [
            "imgedge_http_requests_total{listener=\"cdn\",status=\"200\"} 1",
            "imgedge_http_request_duration_seconds_bucket",
            "imgedge_cache_lookups_total{cache=\"variant\",result=\"hit\"} 1",
            "imgedge_transform_stage_seconds_count{stage=\"decode\"} 1",
            "imgedge_transform_queue_depth",
            "imgedge_renders_total 1",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
