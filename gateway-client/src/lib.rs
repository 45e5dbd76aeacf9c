//! gwmon-client: what a gateway process links to take part in the gateway map.
//!
//! * [`config`]: the client's settings, with a builder and documented defaults.
//! * [`session`]: the session with the monitors: beacons, map slices, the lease.
//! * [`handler`]: the `AnaHandler` trait the gateway implements (or takes from [`adapters`]).
//! * [`adapters`]: handlers for a JSON file, Linux nvmet (configfs) and SPDK (JSON-RPC).
//! * [`metrics`]: the client's Prometheus metrics, for the gateway to serve.
//!
//! ```no_run
//! # async fn demo() -> Result<(), gwmon_client::ClientError> {
//! use std::sync::Arc;
//! use gwmon_client::{adapters::file::FileTarget, ClientConfig};
//! let config = ClientConfig::builder("gw1".parse().unwrap(), gwmon_proto::domain::GroupKey::new(
//!         "rbd".parse().unwrap(), "grp1".parse().unwrap()))
//!     .monitors(["127.0.0.1:7400"])
//!     .build()?;
//! let stop = tokio_util::sync::CancellationToken::new();
//! let exit = gwmon_client::run(config, Arc::new(FileTarget::new("target.json")), stop).await?;
//! # Ok(()) }
//! ```

pub mod adapters;
pub mod config;
pub mod handler;
pub mod metrics;
pub mod session;

use std::time::Duration;

pub use config::{ClientConfig, ClientConfigBuilder, OnDelete, OnMonitorLoss};
pub use handler::{AnaEntry, AnaHandler, AnaStates, HandlerError};
pub use metrics::ClientMetrics;
pub use session::{run, run_with, Dialer, Exit, Plumbing, TcpDialer};

/// Why a session ended in error. Every ANA group was made inaccessible first.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid client configuration: {0}")]
    Config(String),
    #[error("did not receive a first map from the monitors within {0:?} (connect panic): is the gateway created (nvme-gw create) and a monitor reachable?")]
    ConnectPanic(Duration),
    #[error("no ack or map from any monitor for {0:?} (disconnect panic)")]
    DisconnectPanic(Duration),
}
