//! `health` and `blocklist ls`: what needs an operator's attention, and the fences issued.

use std::io::Write;

use gwmon_proto::v1;

use super::emit;
use crate::args::Format;
use crate::client::Admin;
use crate::error::CliError;
use crate::view::blocklist::BlocklistOut;
use crate::view::health::HealthOut;

pub(super) async fn health(
    admin: &mut Admin,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let resp = admin
        .call(|mut c| async move { c.health(v1::HealthRequest {}).await })
        .await?
        .value;
    emit(out, &HealthOut::from_wire(resp), format)
}

pub(super) async fn blocklist(
    admin: &mut Admin,
    stale: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let resp = admin
        .call(|mut c| async move { c.blocklist_list(v1::BlocklistListRequest { stale }).await })
        .await?
        .value;
    emit(out, &BlocklistOut::from_wire(resp), format)
}
