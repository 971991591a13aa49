//! Prometheus metrics (`GET /metrics`, text exposition format): requests and their latency by
//! method and upstream, authentication failures by reason, connect prompts, refreshes, vault
//! lookups, live sessions, changes heard from other nodes. One process-wide registry; recording is a few atomic operations.

use std::sync::OnceLock;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: String,
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PromptLabels {
    pub form: String,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<CallLabels, Counter>,
    pub latency: Family<CallLabels, Histogram>,
    pub auth_failures: Family<ReasonLabels, Counter>,
    pub connect_prompts: Family<PromptLabels, Counter>,
    pub refreshes: Family<OutcomeLabels, Counter>,
    pub vault_lookups: Family<OutcomeLabels, Counter>,
    pub live_sessions: Gauge,
    /// Changes heard from other nodes (PostgreSQL `LISTEN`), by kind.
    pub invalidations: Family<KindLabels, Counter>,
    /// Times the change listener (re)subscribed after losing its connection.
    pub listener_reconnects: Counter,
    /// Audit records lost (the writer gone): should stay 0.
    pub audit_lost: Counter,
    /// Failed audit writes (each is retried).
    pub audit_write_failures: Counter,
    /// Answers released after `audit.durable_wait` before their record was stored.
    pub audit_released_unstored: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("doorman");
        let requests = Family::<CallLabels, Counter>::default();
        registry.register(
            "requests",
            "MCP requests served, by method and upstream",
            requests.clone(),
        );
        let latency = Family::<CallLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to about 6.5 s.
            Histogram::new(exponential_buckets(0.0001, 2.0, 17))
        });
        registry.register(
            "request_duration_seconds",
            "Time to answer MCP requests, by method and upstream",
            latency.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Refused bearer tokens at /mcp, by reason",
            auth_failures.clone(),
        );
        let connect_prompts = Family::<PromptLabels, Counter>::default();
        registry.register(
            "connect_prompts",
            "Connect prompts given, by form and resource",
            connect_prompts.clone(),
        );
        let refreshes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "connection_refreshes",
            "Refreshes of connections at resources, by outcome",
            refreshes.clone(),
        );
        let vault_lookups = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "vault_lookups",
            "Connection lookups for calls, by outcome (hit: served from memory, miss: read from the store)",
            vault_lookups.clone(),
        );
        let live_sessions = Gauge::default();
        registry.register(
            "live_sessions",
            "Stateful MCP sessions live on this node",
            live_sessions.clone(),
        );
        let invalidations = Family::<KindLabels, Counter>::default();
        registry.register(
            "invalidations_heard",
            "Changes announced by any node and heard here (PostgreSQL LISTEN/NOTIFY), by kind",
            invalidations.clone(),
        );
        let listener_reconnects = Counter::default();
        registry.register(
            "change_listener_reconnects",
            "Times the change listener lost its PostgreSQL connection and subscribed again",
            listener_reconnects.clone(),
        );
        let audit_lost = Counter::default();
        registry.register(
            "audit_records_lost",
            "Audit records lost because the audit writer was gone (should stay 0)",
            audit_lost.clone(),
        );
        let audit_write_failures = Counter::default();
        registry.register(
            "audit_write_failures",
            "Failed writes of audit records; each is retried until it succeeds",
            audit_write_failures.clone(),
        );
        let audit_released_unstored = Counter::default();
        registry.register(
            "audit_released_unstored",
            "Answers released after audit.durable_wait before their audit record was stored (the record stays queued)",
            audit_released_unstored.clone(),
        );
        Metrics {
            registry,
            audit_lost,
            audit_write_failures,
            audit_released_unstored,
            invalidations,
            listener_reconnects,
            requests,
            latency,
            auth_failures,
            connect_prompts,
            refreshes,
            vault_lookups,
            live_sessions,
        }
    })
}

/// The methods counted by name. Anything else a client sends is `other`: a label value taken
/// from input would let any client mint new series without bound.
const METHODS: &[&str] = &[
    "tools/call",
    "tools/list",
    "prompts/get",
    "prompts/list",
    "resources/read",
    "resources/list",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
];

fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

impl Metrics {
    /// One served request.
    pub fn request(&self, method: &str, upstream: &str, seconds: f64) {
        let labels = CallLabels {
            method: method_label(method).to_owned(),
            upstream: upstream.to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }

    pub fn count(family: &Family<OutcomeLabels, Counter>, outcome: &str) {
        family
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod method_label_tests {
    #[test]
    fn only_known_methods_become_labels() {
        assert_eq!(super::method_label("tools/call"), "tools/call");
        assert_eq!(super::method_label("x/{random-1}"), "other");
        assert_eq!(super::method_label(""), "other");
    }
}
