//! `config show|set`: the map's tunables.

use std::io::Write;

use gwmon_proto::v1;

use super::emit;
use crate::args::{ConfigCommand, Format};
use crate::client::Admin;
use crate::error::CliError;
use crate::view::config::{parse_update, ConfigOut};

pub(super) async fn run(
    admin: &mut Admin,
    command: ConfigCommand,
    stale: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        ConfigCommand::Show => {
            let resp = admin
                .call(|mut c| async move { c.get_config(v1::GetConfigRequest { stale }).await })
                .await?
                .value;
            emit(out, &ConfigOut::from_get(resp), format)
        }
        ConfigCommand::Set { pairs } => {
            let update = parse_update(&pairs).map_err(CliError::Refused)?;
            let resp = admin
                .call(|mut c| async move {
                    c.set_config(v1::SetConfigRequest {
                        update: Some(update),
                    })
                    .await
                })
                .await?
                .value;
            emit(out, &ConfigOut::from_set(resp), format)
        }
    }
}
