//! `gwmon-gateway`: the reference gateway. It keeps one target's ANA states in step with the
//! gateway map, and exits when the monitors order it to stop or cannot be reached.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use gwmon_client::adapters::file::FileTarget;
use gwmon_client::adapters::nvmet::{NvmetConfig, NvmetTarget};
use gwmon_client::adapters::spdk::SpdkTarget;
use gwmon_client::{
    AnaHandler, ClientConfig, ClientError, ClientMetrics, Exit, OnDelete, OnMonitorLoss,
};
use gwmon_proto::domain::{GatewayId, Group, GroupKey, Pool};
use gwmon_proto::tls::{Tls, TlsFiles};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Adapter {
    /// A JSON file (demos and tests); --target is the file.
    File,
    /// The Linux kernel target; --target is the nvmet configfs root.
    Nvmet,
    /// SPDK; --target is its JSON-RPC socket.
    Spdk,
}

#[derive(Debug, Parser)]
#[command(
    name = "gwmon-gateway",
    version,
    about = "Reference NVMe-oF gateway for gwmon: keeps a target's ANA states in step with the gateway map"
)]
struct Args {
    /// This gateway's id, as created with `nvme-gw create ID POOL GROUP`.
    #[arg(long, env = "GWMON_GATEWAY_ID")]
    id: GatewayId,
    /// The pool of its gateway group.
    #[arg(long, env = "GWMON_POOL")]
    pool: Pool,
    /// Its gateway group (empty for the default group).
    #[arg(long, env = "GWMON_GROUP", default_value = "")]
    group: Group,
    /// Monitor addresses, comma-separated; any one will do.
    #[arg(
        long,
        env = "GWMON_MONITORS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7400"
    )]
    monitors: Vec<String>,
    /// The target to drive.
    #[arg(long, value_enum, default_value = "file")]
    adapter: Adapter,
    /// The adapter's file, configfs root or socket
    /// [defaults: ./gateway.json, /sys/kernel/config/nvmet, /var/tmp/spdk.sock].
    #[arg(long)]
    target: Option<PathBuf>,
    /// With --adapter nvmet: the nvmet ports (directory names under ports/) this gateway
    /// owns, comma-separated; the others are neither scanned nor written. Every port when
    /// not given (one gateway per kernel target).
    #[arg(long, value_delimiter = ',', value_parser = nvmet_port)]
    nvmet_ports: Option<Vec<String>>,
    /// Beacon interval in milliseconds.
    #[arg(long, default_value_t = 500)]
    beacon_ms: u64,
    /// The monitors' beacon grace in milliseconds (`nvme-gw config show`): the lease is at
    /// most half of it, and a gateway whose lease ran out must be able to demote in the
    /// other half, so handler timing is checked against it.
    #[arg(long, env = "GWMON_BEACON_GRACE_MS", default_value_t = 4_000)]
    grace_ms: u64,
    /// How long one call to the target may take, in milliseconds.
    #[arg(long, default_value_t = 400)]
    handler_timeout_ms: u64,
    /// Attempts per target call before the target counts as failed.
    #[arg(long, default_value_t = 3)]
    handler_attempts: u32,
    /// Exit if no first map arrives within this many seconds and no monitor answers
    /// meanwhile. A gateway not created yet keeps waiting while the monitors say so,
    /// logging it every 10 s.
    #[arg(long, default_value_t = 30)]
    connect_panic_s: u64,
    /// Exit after this many seconds without an ack or map from any monitor.
    #[arg(long, default_value_t = 60)]
    disconnect_panic_s: u64,
    /// When no monitor can be reached: `demote` (every ANA group inaccessible when the
    /// lease runs out) or `hold` (keep serving until the disconnect panic, relying on the
    /// storage fence).
    #[arg(long, default_value = "demote")]
    on_monitor_loss: OnMonitorLoss,
    /// Once deleted from the map (`nvme-gw delete`): `wait` (serve nothing and wait to be
    /// created again, then serve, with no restart) or `exit` (shut the target down and exit
    /// with code 3).
    #[arg(long, default_value = "wait")]
    on_delete: OnDelete,
    /// `human` or `json` logs.
    #[arg(long, default_value = "human")]
    log_format: String,
    /// Serve the client's Prometheus metrics (lease age, reconnects, handler errors, ...)
    /// at http://ADDR/metrics. Off unless given.
    #[arg(long, env = "GWMON_GATEWAY_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Mutual TLS: the cluster's CA (PEM). With --tls-cert and --tls-key; the monitors are
    /// then dialled over https.
    #[arg(long, env = "GWMON_TLS_CA", value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Mutual TLS: this gateway's certificate (`nvme-gw certs issue gateway POOL/GROUP/ID`).
    #[arg(long, env = "GWMON_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// Mutual TLS: this gateway's private key.
    #[arg(long, env = "GWMON_TLS_KEY", value_name = "PEM")]
    tls_key: Option<PathBuf>,
}

/// An nvmet port id: configfs names ports by a decimal number (`nvmetcli` and the kernel
/// documentation use 1, 2, ...).
/// An nvmet port id, as configfs names its directory: `01` is port `1`.
fn nvmet_port(s: &str) -> Result<String, String> {
    match s.parse::<u16>() {
        Ok(n) => Ok(n.to_string()),
        Err(_) => Err(format!(
            "{s:?} is not an nvmet port id (a number such as 1)"
        )),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_env("GWMON_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if args.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gwmon-gateway: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let metrics = ClientMetrics::new();
    let config = match client_config(&args, &metrics) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gwmon-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            signal().await;
            stop.cancel();
        });
    }
    if let Some(addr) = args.metrics_listen {
        if let Err(e) = serve_metrics(addr, &metrics, stop.clone()).await {
            eprintln!("gwmon-gateway: cannot listen for metrics on {addr}: {e}");
            return ExitCode::from(1);
        }
    }
    match serve_adapter(args, config, stop).await {
        Ok(Exit::Stopped) => ExitCode::SUCCESS,
        Ok(Exit::Shutdown(reason)) => {
            eprintln!("gwmon-gateway: stopped by the monitors: {reason}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("gwmon-gateway: {e}");
            ExitCode::from(1)
        }
    }
}

/// The client's settings from the flags: TLS files read, every value checked.
fn client_config(
    args: &Args,
    metrics: &ClientMetrics,
) -> Result<ClientConfig, Box<dyn std::error::Error>> {
    let tls = TlsFiles::from_parts(
        args.tls_ca.clone(),
        args.tls_cert.clone(),
        args.tls_key.clone(),
        "--tls-",
    )
    .and_then(|files| files.map(|f| Tls::load(&f)).transpose())?;
    let config = ClientConfig::builder(
        args.id.clone(),
        GroupKey::new(args.pool.clone(), args.group.clone()),
    )
    .monitors(args.monitors.clone())
    .beacon_interval(Duration::from_millis(args.beacon_ms))
    .connect_panic(Duration::from_secs(args.connect_panic_s))
    .disconnect_panic(Duration::from_secs(args.disconnect_panic_s))
    .on_monitor_loss(args.on_monitor_loss)
    .on_delete(args.on_delete)
    .beacon_grace(Duration::from_millis(args.grace_ms))
    .handler_timeout(Duration::from_millis(args.handler_timeout_ms))
    .handler_attempts(args.handler_attempts)
    .metrics(metrics.clone())
    .tls(tls)
    .build()?;
    Ok(config)
}

/// Serve `/metrics` on `addr` until `stop`.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    metrics: &ClientMetrics,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(Arc::new(registry));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}

/// Run the client against the chosen target until it stops.
async fn serve_adapter(
    args: Args,
    config: ClientConfig,
    stop: CancellationToken,
) -> Result<Exit, ClientError> {
    match args.adapter {
        Adapter::File => {
            let path = args.target.unwrap_or_else(|| PathBuf::from("gateway.json"));
            serve(config, FileTarget::new(path), stop).await
        }
        Adapter::Nvmet => {
            let root = args
                .target
                .unwrap_or_else(|| PathBuf::from("/sys/kernel/config/nvmet"));
            let target = NvmetTarget::with_config(NvmetConfig {
                root,
                ports: args.nvmet_ports.map(|p| p.into_iter().collect()),
                ..NvmetConfig::default()
            });
            serve(config, target, stop).await
        }
        Adapter::Spdk => {
            let socket = args
                .target
                .unwrap_or_else(|| PathBuf::from("/var/tmp/spdk.sock"));
            serve(config, SpdkTarget::new(socket), stop).await
        }
    }
}

/// `GET /metrics`: the registry in the OpenMetrics text format.
async fn scrape(
    axum::extract::State(registry): axum::extract::State<Arc<Registry>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn serve<H: AnaHandler>(
    config: ClientConfig,
    handler: H,
    stop: CancellationToken,
) -> Result<Exit, ClientError> {
    gwmon_client::run(config, Arc::new(handler), stop).await
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::nvmet_port;

    #[test]
    fn nvmet_ports_are_named_as_configfs_names_them() {
        assert_eq!(nvmet_port("01").as_deref(), Ok("1"));
        assert_eq!(nvmet_port("65535").as_deref(), Ok("65535"));
        assert!(nvmet_port("65536").is_err());
        assert!(nvmet_port("-1").is_err());
        assert!(nvmet_port("a").is_err());
    }
}
