//! `nvme-gw status`: health, the monitors and the gateways in one line.

use std::io::Write;

use gwmon_proto::v1;

use crate::args::Format;
use crate::client::Admin;
use crate::error::CliError;
use crate::view::group::GroupOut;
use crate::view::health::HealthOut;
use crate::view::print;
use crate::view::summary::SummaryOut;

pub async fn run(
    admin: &mut Admin,
    stale: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let health = admin
        .call(|mut c| async move { c.health(v1::HealthRequest {}).await })
        .await?
        .value;
    let cluster = admin
        .call(|mut c| async move { c.cluster_status(v1::ClusterStatusRequest {}).await })
        .await?
        .value;
    let all = admin
        .call(|mut c| async move { c.show_all(v1::ShowAllRequest { stale }).await })
        .await?
        .value;
    let groups: Vec<GroupOut> = all.groups.into_iter().map(GroupOut::from_wire).collect();
    let view = SummaryOut::new(
        HealthOut::from_wire(health).status,
        cluster.members.iter().filter(|m| m.voter).count(),
        (cluster.leader_id != 0).then_some(cluster.leader_id),
        cluster.term,
        all.map_epoch,
        &groups,
    );
    Ok(print(out, &view, format)?)
}
