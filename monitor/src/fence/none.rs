//! The fencer for storage that has no way to cut a client off.

use tracing::warn;

use super::{BoxFuture, FenceError, FenceOrder, Fencer};

/// Completes every fence at once, without doing anything.
///
/// **Risk.** With this fencer nothing stops a failed-over gateway that is still alive (hung,
/// partitioned from the monitors but not from the hosts) from writing: safety then rests
/// only on the gateway's self-demotion (it stops advertising optimized paths once its lease
/// from the monitors runs out, and `gateway_lease < beacon_grace` orders that before the
/// failover). That covers a gateway process that is alive and running its lease timer; it
/// does not cover one that is frozen (a paused VM, a stuck kernel) and resumes with writes
/// already queued. Use it only when the storage has no blocklist or the deployment accepts
/// that window.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFence;

impl Fencer for NoFence {
    fn fence<'a>(&'a self, order: &'a FenceOrder) -> BoxFuture<'a, Result<(), FenceError>> {
        Box::pin(async move {
            warn!(
                key = %order.key,
                gateway = %order.gateway,
                epoch = %order.epoch,
                "fence completed without fencing (fencer = none): the old owner is trusted to have demoted itself"
            );
            Ok(())
        })
    }

    fn name(&self) -> &'static str {
        "none"
    }
}
