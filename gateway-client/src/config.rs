//! The client's settings and their builder.

use std::time::Duration;

use gwmon_proto::domain::{GatewayId, GroupKey};
use gwmon_proto::tls::Tls;

use crate::metrics::ClientMetrics;

/// What the gateway does when it cannot reach any monitor.
///
/// Self-demotion is what keeps two gateways from being optimized for one ANA group when a
/// gateway is cut off from the monitors but not from its hosts: the monitors fail it over
/// only after the beacon grace, and it has stopped serving by then. The price: if *every*
/// monitor is down (quorum lost, a botched rolling restart), every gateway demotes, and a
/// monitor outage becomes an I/O outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMonitorLoss {
    /// Make every ANA group inaccessible once the lease runs out (the default: safety first).
    #[default]
    Demote,
    /// Keep serving the last states until `disconnect_panic`, relying on the storage fence
    /// alone to stop a gateway that was failed over meanwhile (as Ceph does).
    Hold,
}

impl std::str::FromStr for OnMonitorLoss {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "demote" => Ok(OnMonitorLoss::Demote),
            "hold" => Ok(OnMonitorLoss::Hold),
            other => Err(format!("{other:?} is not demote or hold")),
        }
    }
}

/// What the gateway does when the monitors say it was deleted from the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDelete {
    /// Serve nothing and wait to be created again, then serve as a new gateway (the
    /// default): `nvme-gw delete` then `create` needs no restart of the process.
    #[default]
    Wait,
    /// Serve nothing, shut the target down and end the session (`Exit::Shutdown`).
    Exit,
}

impl std::str::FromStr for OnDelete {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wait" => Ok(OnDelete::Wait),
            "exit" => Ok(OnDelete::Exit),
            other => Err(format!("{other:?} is not wait or exit")),
        }
    }
}

/// Every setting of a client session. Build it with [`ClientConfig::builder`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Monitor gRPC addresses, `host:port`; any of them will do, the client follows the
    /// leader.
    pub monitors: Vec<String>,
    pub gateway: GatewayId,
    pub key: GroupKey,
    pub software_version: String,
    /// Default 500 ms: against the monitors' default 4 s grace and 2 s lease, a lease is
    /// renewed four times over, so one lost beacon costs nothing.
    pub beacon_interval: Duration,
    /// Exit if no first map slice arrives this long after start and no monitor answered
    /// meanwhile. A gateway the monitors do not know yet (started before `nvme-gw create`)
    /// keeps waiting while they say so. Default 30 s, as Ceph.
    pub connect_panic: Duration,
    /// Exit after this long without an ack or a map from any monitor. Default 60 s: long
    /// after the lease made the gateway stop serving, so it only bounds how long a cut-off
    /// process lingers. Ceph uses 100 s.
    pub disconnect_panic: Duration,
    pub on_monitor_loss: OnMonitorLoss,
    /// What to do once deleted from the map (default: wait to be created again).
    pub on_delete: OnDelete,
    /// Reconnect backoff: starts here and doubles, with jitter, up to `reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Attempts per handler call before the target counts as failed (then the gateway
    /// reports itself unavailable), with a backoff doubling from `handler_backoff`.
    /// Default 3.
    pub handler_attempts: u32,
    pub handler_backoff: Duration,
    /// How long one handler call may take before it counts as failed. Default 400 ms:
    /// configfs writes and SPDK RPCs answer in milliseconds, and a demotion may have to wait
    /// for one call in flight (see `beacon_grace`).
    pub handler_timeout: Duration,
    /// The monitors' beacon grace this gateway is deployed against (default 4 s, the
    /// monitors' default). The lease is at most half of it, and the other half is all the
    /// time a gateway whose lease ran out has to make its target inaccessible before the
    /// monitors may fail it over: `handler_timeout × handler_attempts + beacon_interval`
    /// must fit in it, or the configuration is refused.
    pub beacon_grace: Duration,
    /// Timeout of a connection attempt to a monitor.
    pub connect_timeout: Duration,
    /// Where the session counts what it does; register it to serve it (see
    /// [`ClientMetrics`]). A fresh, unregistered one by default.
    pub metrics: ClientMetrics,
    /// Mutual TLS to the monitors with this gateway's certificate, which must name it
    /// (`gwmon://gateway/POOL/GROUP/ID`); `None` (the default): plain h2c.
    pub tls: Option<Tls>,
}

impl ClientConfig {
    pub fn builder(gateway: GatewayId, key: GroupKey) -> ClientConfigBuilder {
        ClientConfigBuilder {
            config: ClientConfig {
                monitors: vec!["127.0.0.1:7400".into()],
                gateway,
                key,
                software_version: concat!("gwmon-client ", env!("CARGO_PKG_VERSION")).into(),
                beacon_interval: Duration::from_millis(500),
                connect_panic: Duration::from_secs(30),
                disconnect_panic: Duration::from_secs(60),
                on_monitor_loss: OnMonitorLoss::Demote,
                on_delete: OnDelete::Wait,
                reconnect_min: Duration::from_millis(50),
                reconnect_max: Duration::from_secs(2),
                handler_attempts: 3,
                handler_backoff: Duration::from_millis(50),
                handler_timeout: Duration::from_millis(400),
                beacon_grace: Duration::from_secs(4),
                connect_timeout: Duration::from_secs(1),
                metrics: ClientMetrics::default(),
                tls: None,
            },
        }
    }
}

/// Builds a [`ClientConfig`]; every setting has a default.
#[derive(Debug, Clone)]
pub struct ClientConfigBuilder {
    config: ClientConfig,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl ClientConfigBuilder {
    pub fn monitors<I, S>(mut self, monitors: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.monitors = monitors.into_iter().map(Into::into).collect();
        self
    }
    setter!(software_version: String);
    setter!(beacon_interval: Duration);
    setter!(connect_panic: Duration);
    setter!(disconnect_panic: Duration);
    setter!(on_monitor_loss: OnMonitorLoss);
    setter!(on_delete: OnDelete);
    setter!(reconnect_min: Duration);
    setter!(reconnect_max: Duration);
    setter!(handler_attempts: u32);
    setter!(handler_backoff: Duration);
    setter!(handler_timeout: Duration);
    setter!(beacon_grace: Duration);
    setter!(connect_timeout: Duration);
    setter!(
        /// Count into these metrics (keep a clone to register and serve them).
        metrics: ClientMetrics
    );
    setter!(
        /// Dial the monitors with mutual TLS (see [`Tls::load`]).
        tls: Option<Tls>
    );

    /// Check and return the configuration.
    pub fn build(self) -> Result<ClientConfig, crate::ClientError> {
        let c = self.config;
        let bad = |m: &str| Err(crate::ClientError::Config(m.to_owned()));
        if c.monitors.is_empty() {
            return bad("at least one monitor address is needed");
        }
        if c.beacon_interval.is_zero() {
            return bad("beacon_interval must be more than zero");
        }
        if c.handler_attempts == 0 {
            return bad("handler_attempts must be at least 1");
        }
        if c.disconnect_panic <= c.beacon_interval {
            return bad("disconnect_panic must be longer than beacon_interval");
        }
        if c.reconnect_max < c.reconnect_min {
            return bad("reconnect_max must be at least reconnect_min");
        }
        if c.handler_timeout.is_zero() {
            return bad("handler_timeout must be more than zero");
        }
        let demotion = c
            .handler_timeout
            .saturating_mul(c.handler_attempts)
            .saturating_add(c.beacon_interval);
        let room = c.beacon_grace / 2;
        if demotion > room {
            return Err(crate::ClientError::Config(format!(
                "handler_timeout {} ms x handler_attempts {} + beacon_interval {} ms = {} ms                  does not fit in half the beacon grace ({} ms of {} ms): a gateway whose lease                  ran out could still be demoting when the monitors fail it over",
                c.handler_timeout.as_millis(),
                c.handler_attempts,
                c.beacon_interval.as_millis(),
                demotion.as_millis(),
                room.as_millis(),
                c.beacon_grace.as_millis()
            )));
        }
        Ok(c)
    }
}
