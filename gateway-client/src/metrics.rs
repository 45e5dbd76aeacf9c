//! The client's own Prometheus metrics, for the gateway process to mount beside its own.
//!
//! The library keeps no global registry: the gateway makes a [`ClientMetrics`], hands a
//! clone to [`crate::ClientConfigBuilder::metrics`], and registers it into whatever
//! `prometheus_client` registry it serves (`gwmon-gateway --metrics-listen` does exactly
//! that). Series are prefixed `gwmon_client_`.
//!
//! The lease is reported as its *age* (time since the last ack that renewed it) and its
//! *remaining* time, both computed when scraped, so a gateway stuck without acks shows a
//! growing age even though nothing in the session updates a gauge.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};
use tokio::time::Instant;

type Labels = Vec<(&'static str, &'static str)>;

/// Cheap to clone; clones share the same series.
#[derive(Clone, Debug, Default)]
pub struct ClientMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions_opened: Counter,
    reconnects: Counter,
    connected: Gauge,
    beacons_sent: Counter,
    acks: Counter,
    slices: Counter,
    handler_errors: Family<Labels, Counter>,
    demotions: Counter,
    optimized: Gauge,
    lease: Mutex<Lease>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Lease {
    last_ack: Option<Instant>,
    until: Option<Instant>,
}

impl ClientMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers every series into `registry` under the `gwmon_client` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("gwmon_client");
        let i = &self.inner;
        r.register(
            "sessions_opened",
            "Sessions opened with a monitor leader",
            i.sessions_opened.clone(),
        );
        r.register(
            "reconnects",
            "Sessions opened after the first (leader changes, lost connections)",
            i.reconnects.clone(),
        );
        r.register(
            "connected",
            "1 while a session with the monitors is open",
            i.connected.clone(),
        );
        r.register(
            "beacons_sent",
            "Beacons sent to the monitors",
            i.beacons_sent.clone(),
        );
        r.register(
            "acks_received",
            "Beacon acks received (each renews the lease)",
            i.acks.clone(),
        );
        r.register("slices_received", "Map slices received", i.slices.clone());
        r.register(
            "handler_errors",
            "Failed handler calls by operation (apply, subsystems, shutdown); apply is retried",
            i.handler_errors.clone(),
        );
        r.register(
            "demotions",
            "Times the lease ran out while serving, so every ANA group went inaccessible",
            i.demotions.clone(),
        );
        r.register(
            "optimized_ana_groups",
            "ANA groups the target serves optimized, as last applied",
            i.optimized.clone(),
        );
        r.register_collector(Box::new(LeaseCollector(self.inner.clone())));
    }

    fn lease(&self) -> std::sync::MutexGuard<'_, Lease> {
        self.inner
            .lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn session_opened(&self, first: bool) {
        self.inner.sessions_opened.inc();
        if !first {
            self.inner.reconnects.inc();
        }
        self.inner.connected.set(1);
    }

    pub(crate) fn session_closed(&self) {
        self.inner.connected.set(0);
    }

    pub(crate) fn beacon_sent(&self) {
        self.inner.beacons_sent.inc();
    }

    pub(crate) fn ack(&self, now: Instant, lease_until: Option<Instant>) {
        self.inner.acks.inc();
        let mut l = self.lease();
        l.last_ack = Some(now);
        l.until = lease_until;
    }

    pub(crate) fn slice(&self) {
        self.inner.slices.inc();
    }

    pub(crate) fn handler_error(&self, op: &'static str) {
        self.inner
            .handler_errors
            .get_or_create(&vec![("op", op)])
            .inc();
    }

    pub(crate) fn demoted(&self) {
        self.inner.demotions.inc();
    }

    pub(crate) fn serving(&self, optimized: usize) {
        self.inner
            .optimized
            .set(i64::try_from(optimized).unwrap_or(i64::MAX));
    }
}

/// Computes the lease series when scraped.
#[derive(Debug)]
struct LeaseCollector(Arc<Inner>);

impl Collector for LeaseCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let lease = *self.0.lease.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if let Some(last) = lease.last_ack {
            let age = ConstGauge::new(now.saturating_duration_since(last).as_secs_f64());
            let m = encoder.encode_descriptor(
                "lease_age",
                "Time since the last ack renewed the lease",
                Some(&Unit::Seconds),
                age.metric_type(),
            )?;
            age.encode(m)?;
        }
        let left = lease
            .until
            .map_or(0.0, |u| u.saturating_duration_since(now).as_secs_f64());
        let left = ConstGauge::new(left);
        let m = encoder.encode_descriptor(
            "lease_remaining",
            "Time the lease still lets the gateway serve optimized paths; 0 when expired",
            Some(&Unit::Seconds),
            left.metric_type(),
        )?;
        left.encode(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn lease_age_grows_at_scrape_time_and_counters_count() {
        let m = ClientMetrics::new();
        let mut r = Registry::default();
        m.register(&mut r);
        m.session_opened(true);
        m.session_opened(false);
        m.handler_error("apply");
        m.handler_error("apply");
        let now = Instant::now();
        m.ack(now, Some(now + Duration::from_secs(2)));
        tokio::time::advance(Duration::from_millis(1500)).await;
        let mut text = String::new();
        encode(&mut text, &r).expect("encode");
        for line in [
            "gwmon_client_sessions_opened_total 2",
            "gwmon_client_reconnects_total 1",
            "gwmon_client_connected 1",
            "gwmon_client_handler_errors_total{op=\"apply\"} 2",
            "gwmon_client_lease_age_seconds 1.5",
            "gwmon_client_lease_remaining_seconds 0.5",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut text = String::new();
        encode(&mut text, &r).expect("encode");
        assert!(
            text.contains("gwmon_client_lease_remaining_seconds 0.0"),
            "{text}"
        );
    }
}
