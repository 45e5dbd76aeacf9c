//! The fencer for storage that has no way to cut a client off.

use tracing::warn;

use super::{BoxFuture, FenceError, FenceOrder, Fencer};

/// Completes every fence at once, without doing anything.
///
/// **What it cannot protect against.** Safety then rests only on the gateway's
/// self-demotion: it stops advertising optimized paths once its lease from the monitors runs
/// out, and `gateway_lease < beacon_grace` orders that before the failover. That needs the
/// gateway *process* to be alive and running its lease timer. A gateway process that is
/// paused (SIGSTOP, a frozen VM), crashed or OOM-killed demotes nothing, while its data
/// plane (kernel nvmet, SPDK) keeps serving the ANA states it was last given: the failed
/// gateway's ANA group is then optimized on two gateways as soon as the new owner is
/// promoted, and a paused one may resume with writes already queued. Use it only when the
/// deployment accepts that; otherwise use the `file` fencer (file adapter), or `exec` with
/// `deploy/fence/nvmet-fence` or `deploy/fence/spdk-fence`, or a storage blocklist. A
/// cluster of several monitors runs it only when `fencer = none` is set explicitly, and
/// `nvme-gw health` warns about it (`NVMEOF_NO_FENCER`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFence;

impl NoFence {
    /// Its [`Fencer::name`], which the health check compares with.
    pub const NAME: &'static str = "none";
}

impl Fencer for NoFence {
    fn cuts_off(&self) -> bool {
        false
    }

    fn fence<'a>(&'a self, order: &'a FenceOrder) -> BoxFuture<'a, Result<(), FenceError>> {
        Box::pin(async move {
            warn!(
                key = %order.key,
                gateway = %order.gateway,
                epoch = %order.epoch,
                "nothing to fence with (fencer = none): the fence completes a beacon grace after it started, once the old owner's lease has run out and it has demoted itself"
            );
            Ok(())
        })
    }

    fn name(&self) -> &'static str {
        Self::NAME
    }
}
