//! The messages of a gateway session (`GatewayService.Session`), after validation.
//!
//! The stream carries a `Hello`, then beacons, up; acks, map slices and shutdown orders
//! down. These types are what the monitor and the gateway client handle once a wire
//! message has passed the conversions in [`crate::convert`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::Invalid;
use super::ids::{Epoch, GatewayId, GroupKey};
use super::report::{GatewayReport, MapSlice};

/// The first message of a session: who the gateway is and which group it serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hello {
    pub gateway: GatewayId,
    pub key: GroupKey,
    /// The gateway software's version, shown to operators. Checked by
    /// [`Hello::check_software_version`] at the edge.
    pub software_version: String,
    /// This process's incarnation: drawn at random when it starts (and again when it
    /// rejoins after being declared failed), never zero. The leader lets one incarnation of
    /// a gateway id hold a lease at a time.
    pub incarnation: u64,
}

impl Hello {
    /// The longest software version accepted, in bytes: enough for a semantic version with
    /// a build suffix, short enough that a misbehaving gateway cannot bloat the map or logs.
    pub const MAX_SOFTWARE_VERSION_LEN: usize = 64;

    /// A software version must be 1 to [`Self::MAX_SOFTWARE_VERSION_LEN`] bytes of printable
    /// ASCII (spaces allowed), because it is printed verbatim in CLI tables and logs.
    pub fn check_software_version(s: &str) -> Result<(), Invalid> {
        if s.is_empty() {
            return Err(Invalid::Empty);
        }
        if s.len() > Self::MAX_SOFTWARE_VERSION_LEN {
            return Err(Invalid::TooLong {
                len: s.len(),
                max: Self::MAX_SOFTWARE_VERSION_LEN,
            });
        }
        if let Some((pos, ch)) = s
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_graphic() || *c == ' '))
        {
            return Err(Invalid::BadChar {
                ch,
                pos,
                allowed: "printable ASCII",
            });
        }
        Ok(())
    }
}

/// A validated message from a gateway to the monitors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayMessage {
    Hello(Hello),
    /// A beacon, with the incarnation of the process that sent it. When
    /// `subsystems_unchanged` is set the report's subsystem list is empty and stands for
    /// the list of the session's last beacon that carried one.
    Beacon {
        incarnation: u64,
        report: GatewayReport,
        subsystems_unchanged: bool,
    },
}

/// The monitor's answer to one beacon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ack {
    /// The `seq` of the beacon answered.
    pub seq: u64,
    /// The current epoch of the gateway's group: a gateway that has applied an older one
    /// knows a map slice is on its way.
    pub epoch: Epoch,
    /// The epoch of the whole map, for diagnostics.
    pub map_epoch: Epoch,
    /// How long after receiving the ack the gateway may keep advertising optimized paths
    /// without hearing from the monitors again. Never zero: a zero lease would demote the
    /// gateway on every ack, which is never what a monitor means.
    pub lease: Duration,
    /// The monitor takes beacons that leave out an unchanged subsystem list on this session.
    pub unchanged_subsystems_accepted: bool,
}

/// A validated message from the monitors to a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MonitorMessage {
    Ack(Ack),
    MapSlice(MapSlice),
    /// Stop serving, for the reason given (logged by the gateway); `kind` says whether the
    /// gateway may rejoin.
    Shutdown {
        kind: ShutdownKind,
        reason: String,
    },
}

/// Why a gateway is told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ShutdownKind {
    /// Declared failed (timed out, or its target failed): it makes every ANA group
    /// inaccessible and may rejoin at once as a new incarnation.
    DeclaredFailed,
    /// Deleted by an admin.
    Deleted,
    /// No longer in the map (or an older monitor that did not say why).
    Removed,
}

impl MonitorMessage {
    /// The longest shutdown reason accepted, in bytes: one log line, not a document.
    pub const MAX_REASON_LEN: usize = 1024;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_versions_are_short_printable_ascii() {
        assert_eq!(Hello::check_software_version("1.2.3 (abc)"), Ok(()));
        assert_eq!(Hello::check_software_version(""), Err(Invalid::Empty));
        assert_eq!(
            Hello::check_software_version(&"9".repeat(65)),
            Err(Invalid::TooLong { len: 65, max: 64 })
        );
        assert_eq!(
            Hello::check_software_version("1.0\n"),
            Err(Invalid::BadChar {
                ch: '\n',
                pos: 3,
                allowed: "printable ASCII"
            })
        );
        assert!(matches!(
            Hello::check_software_version("v1é"),
            Err(Invalid::BadChar {
                ch: 'é',
                pos: 2,
                ..
            })
        ));
    }
}
