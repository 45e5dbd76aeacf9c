//! The leader-redirect convention of the gateway and admin services.
//!
//! Only the Raft leader serves sessions and writes. A monitor that is not the leader ends
//! the call with [`tonic::Code::FailedPrecondition`] and, when it knows the leader, the
//! response metadata header [`LEADER_HEADER`] holding the leader's gRPC address
//! (`host:port`); the client reconnects there. No header means no leader is known (an
//! election is running): the client backs off and tries another monitor. Both sides use the
//! two functions below so that the convention lives in one place.

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// The metadata header that names the leader's gRPC address in a not-leader refusal.
pub const LEADER_HEADER: &str = "gwmon-leader";

/// The status a non-leader monitor answers with. `leader` is the leader's `host:port`, if
/// known; an address that is not valid header text (it was checked when the monitor's
/// configuration was loaded, so this does not happen in practice) is left out rather than
/// sent garbled, which makes the client fall back to trying other monitors.
pub fn not_leader(leader: Option<&str>) -> Status {
    let mut metadata = MetadataMap::new();
    let value = leader.and_then(|addr| addr.parse::<MetadataValue<_>>().ok());
    let message = match (&value, leader) {
        (Some(_), Some(addr)) => format!("this monitor is not the leader; the leader is {addr}"),
        _ => "this monitor is not the leader, and no leader is known".to_owned(),
    };
    if let Some(value) = value {
        metadata.insert(LEADER_HEADER, value);
    }
    Status::with_metadata(Code::FailedPrecondition, message, metadata)
}

/// The leader address a not-leader refusal carries, if `status` is one and names a leader.
/// Other statuses give `None`: a FAILED_PRECONDITION without the header is an unknown
/// leader, and any other code is not a redirect at all.
pub fn leader_hint(status: &Status) -> Option<&str> {
    if status.code() != Code::FailedPrecondition {
        return None;
    }
    let addr = status.metadata().get(LEADER_HEADER)?.to_str().ok()?;
    (!addr.is_empty()).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_carries_the_leader_address_in_the_header() {
        let status = not_leader(Some("10.0.0.2:6789"));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status
                .metadata()
                .get(LEADER_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("10.0.0.2:6789")
        );
        assert_eq!(leader_hint(&status), Some("10.0.0.2:6789"));
        assert!(status.message().contains("10.0.0.2:6789"));
    }

    #[test]
    fn without_a_known_leader_there_is_no_header() {
        let status = not_leader(None);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.metadata().get(LEADER_HEADER).is_none());
        assert_eq!(leader_hint(&status), None);

        let status = not_leader(Some("bad\naddr"));
        assert!(status.metadata().get(LEADER_HEADER).is_none());
        assert!(status.message().contains("no leader is known"));
    }

    #[test]
    fn only_failed_precondition_is_a_redirect() {
        let mut status = Status::unavailable("down");
        status
            .metadata_mut()
            .insert(LEADER_HEADER, MetadataValue::from_static("10.0.0.2:6789"));
        assert_eq!(leader_hint(&status), None);
    }

    #[test]
    fn the_header_name_is_a_valid_lowercase_metadata_key() {
        assert_eq!(LEADER_HEADER, LEADER_HEADER.to_ascii_lowercase());
        assert!(
            tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(
                LEADER_HEADER.as_bytes()
            )
            .is_ok()
        );
    }
}
