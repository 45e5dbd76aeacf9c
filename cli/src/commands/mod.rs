//! Running a command: check the arguments, make the calls, print the result. One module
//! per command group; [`run`] connects and dispatches.
//!
//! * [`gateway`]: `create`, `delete`, `enable`, `disable`, `set-location`, `disaster-*`.
//! * [`group`]: `show`, `show-all`, `listeners`, `ok-to-stop`, `maintenance`.
//! * [`health`]: `health`, `blocklist ls`.
//! * [`config`]: `config show|set`.
//! * [`events`]: `events` and `events --follow`.
//! * [`cluster`]: `cluster status|ok-to-stop|add|remove|backup`.
//! * [`volume`]: `volume ...`, `host list`.

mod cluster;
mod config;
mod events;
mod gateway;
mod group;
mod health;
mod volume;

use std::io::Write;
use std::time::Duration;

use clap::CommandFactory;
use gwmon_proto::domain::{GatewayId, Group, Pool};
use gwmon_proto::tls::{Tls, TlsFiles};
use gwmon_proto::v1;

use crate::args::{
    BlocklistCommand, Cli, Command, Format, GatewayArgs, Global, GroupArgs, HostCommand,
};
use crate::client::{Admin, Settings};
use crate::error::CliError;
use crate::view::{print, View};

pub(crate) use group::show_group;

/// Run `cli`, printing to `out` in `format` (already resolved from `--format` and whether
/// standard output is a terminal).
pub async fn run(cli: Cli, format: Format, out: &mut dyn Write) -> Result<(), CliError> {
    match cli.command {
        // Needs no monitor, so it works before anything is set up.
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "nvme-gw", out);
            Ok(())
        }
        // Offline too: certificates are made before any monitor can check them.
        Command::Certs { command } => crate::certs::run(command, format, out),
        // What it sets is how gwmon always works: no monitor to ask.
        Command::Set { var, value } => crate::set::run(var, &value, format, out),
        command => {
            let stale = cli.global.stale;
            let mut admin = connect(cli.global)?;
            dispatch(&mut admin, command, stale, format, out).await
        }
    }
}

/// The admin client for the monitors the global flags name.
fn connect(g: Global) -> Result<Admin, CliError> {
    if g.monitors.is_empty() {
        // Only an empty GWMON_MONITORS gets here; clap checked every address given.
        return Err(CliError::Refused(
            "invalid --monitors: no monitor address given".to_owned(),
        ));
    }
    let tls = TlsFiles::from_parts(g.tls_ca, g.tls_cert, g.tls_key, "--tls-")?
        .map(|files| Tls::load(&files))
        .transpose()?;
    Ok(Admin::new(Settings {
        monitors: g.monitors,
        timeout: Duration::from_millis(g.timeout_ms),
        retries: g.retries,
        tls,
    }))
}

async fn dispatch(
    admin: &mut Admin,
    command: Command,
    stale: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        Command::Create { gw, location } => {
            gateway::create(admin, &gw, location, format, out).await
        }
        Command::Delete { gw } => gateway::delete(admin, &gw, format, out).await,
        Command::Enable { gw } => gateway::admin_state(admin, &gw, true, format, out).await,
        Command::Disable { gw } => gateway::admin_state(admin, &gw, false, format, out).await,
        Command::SetLocation { gw, location } => {
            gateway::set_location(admin, &gw, location, format, out).await
        }
        Command::DisasterSet { group, location } => {
            gateway::disaster(admin, &group, location, true, format, out).await
        }
        Command::DisasterClear { group, location } => {
            gateway::disaster(admin, &group, location, false, format, out).await
        }
        Command::Show { group } => group::show(admin, &group, stale, format, out).await,
        Command::ShowAll => group::show_all(admin, stale, format, out).await,
        Command::Listeners { group } => group::listeners(admin, &group, stale, format, out).await,
        Command::OkToStop {
            group,
            gateways,
            min_available,
        } => group::ok_to_stop(admin, &group, &gateways, min_available, stale, format, out).await,
        Command::Maintenance { command } => group::maintenance(admin, command, format, out).await,
        Command::Status => crate::status::run(admin, stale, format, out).await,
        Command::Health => health::health(admin, format, out).await,
        Command::Blocklist {
            command: BlocklistCommand::Ls,
        } => health::blocklist(admin, stale, format, out).await,
        Command::Events {
            follow,
            after_epoch,
        } => events::run(admin, follow, after_epoch, format, out).await,
        Command::Config { command } => config::run(admin, command, stale, format, out).await,
        Command::Cluster { command } => cluster::run(admin, command, stale, format, out).await,
        Command::Volume { command } => volume::run(admin, command, stale, format, out).await,
        Command::Host {
            command: HostCommand::List,
        } => volume::hosts(admin, stale, format, out).await,
        // Handled by `run`, before any monitor is needed.
        Command::Completions { .. } | Command::Certs { .. } | Command::Set { .. } => Ok(()),
    }
}

pub(crate) fn emit<V: View>(out: &mut dyn Write, view: &V, format: Format) -> Result<(), CliError> {
    Ok(print(out, view, format)?)
}

/// Check a value with the domain type's rules: a bad one is refused here, with the same
/// reason the monitor would give, without a round trip.
pub(crate) fn checked<T: std::str::FromStr<Err = gwmon_proto::domain::Invalid>>(
    value: &str,
    what: &str,
) -> Result<(), CliError> {
    value
        .parse::<T>()
        .map(drop)
        .map_err(|e| CliError::Refused(format!("invalid {what} {value:?}: {e}")))
}

pub(crate) fn group_key(g: &GroupArgs) -> Result<v1::GroupKey, CliError> {
    checked::<Pool>(&g.pool, "pool")?;
    checked::<Group>(&g.group, "group")?;
    Ok(v1::GroupKey {
        pool: g.pool.clone(),
        group: g.group.clone(),
    })
}

pub(crate) fn gateway_args(gw: &GatewayArgs) -> Result<(String, v1::GroupKey), CliError> {
    checked::<GatewayId>(&gw.id, "gateway id")?;
    Ok((gw.id.clone(), group_key(&gw.group)?))
}

/// `Ok` for a yes; the reason as [`CliError::Busy`] (exit 16) for a no.
pub(crate) fn busy_unless(ok: bool, reason: String) -> Result<(), CliError> {
    if ok {
        Ok(())
    } else {
        Err(CliError::Busy(reason))
    }
}
