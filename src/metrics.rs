//! Prometheus metrics of one running server. Every family has a fixed, small label set:
//! routes are templates (`/auth/sessions/{id}`), never raw paths, and no label holds an id.

use std::time::Instant;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets (seconds) for requests and storage operations: 100 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The metric families of the server.
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_in_flight: IntGauge,
    pub tokens_issued: IntCounterVec,
    pub refresh_outcomes: IntCounterVec,
    pub active_sessions: IntGauge,
    pub storage_duration: HistogramVec,
    pub storage_errors: IntCounterVec,
    pub pool_connections: IntGaugeVec,
    pub pool_max_connections: IntGauge,
    pub webhook_backlog: IntGaugeVec,
    pub cache_requests: IntCounterVec,
    pub webhook_deliveries: IntCounterVec,
    pub audit_events: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub render_duration: Histogram,
    pub health: IntGaugeVec,
}

/// The checks of `/health`, in the order the gauge and the answer list them.
pub const HEALTH_CHECKS: [&str; 4] = ["storage", "cache", "signing_keys", "webhooks"];

/// Every metric family name the server exports (without the `_bucket`/`_sum`/`_count`
/// suffixes of histograms), process metrics included.
pub const FAMILIES: &[&str] = &[
    "atoms_auth_build_info",
    "atoms_auth_http_requests_total",
    "atoms_auth_http_request_duration_seconds",
    "atoms_auth_http_requests_in_flight",
    "atoms_auth_tokens_issued_total",
    "atoms_auth_refresh_total",
    "atoms_auth_active_sessions",
    "atoms_auth_storage_operation_duration_seconds",
    "atoms_auth_storage_errors_total",
    "atoms_auth_storage_pool_connections",
    "atoms_auth_storage_pool_max_connections",
    "atoms_auth_webhook_backlog",
    "atoms_auth_cache_requests_total",
    "atoms_auth_webhook_deliveries_total",
    "atoms_auth_audit_events_total",
    "atoms_auth_rate_limited_total",
    "atoms_auth_metrics_render_duration_seconds",
    "atoms_auth_health_status",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

/// Registers a metric and hands it back.
fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> prometheus::Result<M> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    register(r, IntCounterVec::new(Opts::new(name, help), labels)?)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
    register(r, HistogramVec::new(opts, labels)?)
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    register(r, IntGauge::new(name, help)?)
}

fn gauges(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    register(r, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

impl Metrics {
    /// A fresh registry with every family (each server instance in a process has its own).
    /// Fails only if two families were given one name.
    pub fn new(backend: &str) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let r = &registry;
        let build = gauges(
            r,
            "atoms_auth_build_info",
            "Version and storage backend of this server.",
            &["version", "backend"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION"), backend]).set(1);
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        let render_duration = register(
            r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "atoms_auth_metrics_render_duration_seconds",
                    "Time to render this exposition.",
                )
                .buckets(BUCKETS.to_vec()),
            )?,
        )?;
        let metrics = Self {
            http_requests: counter(
                r,
                "atoms_auth_http_requests_total",
                "HTTP requests answered, by method, route template and status.",
                &["method", "route", "status"],
            )?,
            http_duration: histogram(
                r,
                "atoms_auth_http_request_duration_seconds",
                "HTTP request duration, by method and route template.",
                &["method", "route"],
            )?,
            http_in_flight: gauge(
                r,
                "atoms_auth_http_requests_in_flight",
                "HTTP requests being served.",
            )?,
            tokens_issued: counter(
                r,
                "atoms_auth_tokens_issued_total",
                "Access tokens issued, by grant type.",
                &["grant"],
            )?,
            refresh_outcomes: counter(
                r,
                "atoms_auth_refresh_total",
                "Refresh-token presentations by outcome (rotated, grace, reuse, invalid).",
                &["outcome"],
            )?,
            active_sessions: gauge(
                r,
                "atoms_auth_active_sessions",
                "Sessions not ended, revoked or expired (counted periodically).",
            )?,
            storage_duration: histogram(
                r,
                "atoms_auth_storage_operation_duration_seconds",
                "Storage operation duration, by operation.",
                &["operation"],
            )?,
            storage_errors: counter(
                r,
                "atoms_auth_storage_errors_total",
                "Storage operations that failed, by operation.",
                &["operation"],
            )?,
            pool_connections: gauges(
                r,
                "atoms_auth_storage_pool_connections",
                "Storage pool connections by state (idle, in_use); absent for Redis.",
                &["state"],
            )?,
            pool_max_connections: register(
                r,
                IntGauge::new(
                    "atoms_auth_storage_pool_max_connections",
                    "The most connections the storage pools may open; 0 for Redis.",
                )?,
            )?,
            webhook_backlog: gauges(
                r,
                "atoms_auth_webhook_backlog",
                "Webhook deliveries in the queue by state (pending, failed), shared by every \
                 instance; refreshed with the health checks.",
                &["state"],
            )?,
            cache_requests: counter(
                r,
                "atoms_auth_cache_requests_total",
                "In-process cache lookups, by cache and result (hit, miss).",
                &["cache", "result"],
            )?,
            webhook_deliveries: counter(
                r,
                "atoms_auth_webhook_deliveries_total",
                "Webhook delivery attempts, by outcome (delivered, retry, failed).",
                &["outcome"],
            )?,
            audit_events: counter(
                r,
                "atoms_auth_audit_events_total",
                "Audit events recorded, by event type.",
                &["event"],
            )?,
            rate_limited: counter(
                r,
                "atoms_auth_rate_limited_total",
                "Requests refused by a rate limit, by route and key kind (client, ip).",
                &["route", "scope"],
            )?,
            render_duration,
            health: gauges(
                r,
                "atoms_auth_health_status",
                "Last health verdict by check (and overall): 0 healthy, 1 unknown, 2 degraded, \
                 3 unhealthy; refreshed every 15 s and on each /health check.",
                &["check"],
            )?,
            registry,
        };
        touch(
            &metrics.tokens_issued,
            &[&["password"], &["client_credentials"], &["refresh_token"]],
        );
        let outcomes: [&[&str]; 4] = [&["rotated"], &["grace"], &["reuse"], &["invalid"]];
        touch(&metrics.refresh_outcomes, &outcomes);
        touch(&metrics.webhook_deliveries, &[&["delivered"], &["retry"], &["failed"]]);
        // 0 until the first health check, a moment after start.
        for state in ["pending", "failed"] {
            metrics.webhook_backlog.with_label_values(&[state]).set(0);
        }
        touch(&metrics.storage_errors, &[&["ping"]]);
        // Unknown (1) until the first check, which runs in the background after start.
        for check in HEALTH_CHECKS.iter().chain(&["overall"]) {
            metrics.health.with_label_values(&[check]).set(1);
        }
        for scope in ["client", "ip"] {
            for route in ["/auth/token", "/auth/revoke", "/auth/introspect"] {
                touch(&metrics.rate_limited, &[&[route, scope]]);
            }
        }
        for event in crate::audit_event::events::ALL {
            touch(&metrics.audit_events, &[&[event]]);
        }
        Ok(metrics)
    }

    /// The exposition in the Prometheus text format.
    pub fn render(&self) -> String {
        let started = Instant::now();
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding to a Vec cannot fail but for a family with no samples' help text clash,
        // which the constant definitions above rule out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        self.render_duration.observe(started.elapsed().as_secs_f64());
        String::from_utf8(out).unwrap_or_default()
    }

    /// Times one storage operation.
    pub fn storage_op(&self, operation: &'static str) -> StorageTimer<'_> {
        StorageTimer { metrics: self, operation, started: Instant::now() }
    }

    /// Counts a lookup of an in-process cache.
    pub fn cache(&self, cache: &str, hit: bool) {
        self.cache_requests.with_label_values(&[cache, if hit { "hit" } else { "miss" }]).inc();
    }
}

/// A running storage operation; `finish` records its duration and, on failure, the error.
pub struct StorageTimer<'a> {
    metrics: &'a Metrics,
    operation: &'static str,
    started: Instant,
}

impl StorageTimer<'_> {
    pub fn finish(self, ok: bool) {
        self.metrics
            .storage_duration
            .with_label_values(&[self.operation])
            .observe(self.started.elapsed().as_secs_f64());
        if !ok {
            self.metrics.storage_errors.with_label_values(&[self.operation]).inc();
        }
    }
}

/// Creates the children of a counter family, so each is exported (as zero) before its first
/// event and rate() over it has a start.
fn touch(vec: &IntCounterVec, values: &[&[&str]]) {
    for v in values {
        let _ = vec.with_label_values(v);
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}
