//! Conversions between the wire types ([`crate::v1`]) and the domain types
//! ([`crate::domain`]).
//!
//! Wire to domain is `TryFrom`: everything a peer sends is checked here, once, and a refusal
//! is a [`FieldError`] naming the offending field by its path within the message
//! (`subsystems[2].namespaces[0].ana_group must not be zero`), so that the operator of the
//! sending side can find the bad value from one log line. Domain to wire is `From`: a
//! domain value is valid by construction, so sending it cannot fail.
//!
//! Paths are relative to the message converted: converting a `v1::Beacon` reports
//! `subsystems[0].nqn`, converting the `v1::GatewayMessage` around it reports
//! `beacon.subsystems[0].nqn`.
//!
//! The gRPC message size limit bounds a message as a whole; [`MAX_SUBSYSTEMS`],
//! [`MAX_LISTENERS`] and [`MAX_NAMESPACES`] bound each list within it, and
//! [`MAX_REPORT_LISTENERS`] and [`MAX_REPORT_NAMESPACES`] what one beacon carries in all, so
//! that the work and memory one peer can cause per beacon stay predictable, and a report
//! the monitors commit stays far below what Raft can ship in one message.

mod ids;
pub mod replica;
mod report;
mod session;
mod slice;

use crate::domain::{Field, FieldError, Invalid};

/// At most this many subsystems per beacon. Real gateways serve tens to a few hundred
/// subsystems (SPDK's default limit is 1024); the cap stops one peer from making the monitor
/// validate, compare and commit an unbounded list on every beacon.
pub const MAX_SUBSYSTEMS: usize = 1024;

/// At most this many listeners per subsystem: one or two addresses per port per NIC is the
/// norm, 64 leaves room for large hosts while keeping each report small.
pub const MAX_LISTENERS: usize = 64;

/// At most this many namespaces per subsystem: comfortably above what SPDK and Linux
/// nvmet are deployed with per subsystem, and it bounds the per-subsystem work.
pub const MAX_NAMESPACES: usize = 4096;

/// At most this many listeners in one beacon, across all its subsystems: a gateway
/// listens on a few addresses, mostly the same ones for every subsystem.
pub const MAX_REPORT_LISTENERS: usize = 4096;

/// At most this many namespaces in one beacon, across all its subsystems. The lists' own
/// caps multiply to four million; a gateway serves thousands. With every field at its
/// longest, a beacon at all the bounds stays under [`crate::MAX_CLIENT_MESSAGE_BYTES`]
/// (a test checks it), and the monitors keep and commit it whole.
pub const MAX_REPORT_NAMESPACES: usize = 8192;

/// Unwrap a required submessage: protobuf cannot express "required", so an unset message
/// field arrives as `None` and is refused as [`Invalid::Missing`] under `field`.
/// Useful to the services too, for the `key` of admin requests.
pub fn required<T>(value: Option<T>, field: &str) -> Result<T, FieldError> {
    value.ok_or(Invalid::Missing).field(field)
}

/// Refuse a list longer than `max` before converting any element, so that an oversized
/// list costs nothing but its length check.
fn bounded<T>(items: &[T], max: usize, field: &str) -> Result<(), FieldError> {
    if items.len() > max {
        return Err(FieldError::new(
            field,
            Invalid::TooLong {
                len: items.len(),
                max,
            },
        ));
    }
    Ok(())
}

/// Decode a protobuf enum field. Proto3 keeps unknown numbers (a newer peer's values), so
/// they arrive as a plain `i32` and are refused here as [`Invalid::UnknownEnum`]; the caller
/// refuses the `UNSPECIFIED` variant itself.
fn known_enum<E: TryFrom<i32>>(raw: i32) -> Result<E, Invalid> {
    E::try_from(raw).map_err(|_| Invalid::UnknownEnum(raw))
}

/// Render an index into a repeated field for a path: `subsystems[2]`.
fn at(field: &str, index: usize) -> String {
    format!("{field}[{index}]")
}

/// Echo at most this much of a refused value in an error, so that an abusive input does not
/// end up whole in the log.
const ECHO_MAX: usize = 64;

/// The first [`ECHO_MAX`] bytes of `s` (cut at a character boundary), marked when cut.
fn echo(s: &str) -> String {
    if s.len() <= ECHO_MAX {
        return s.to_owned();
    }
    let mut end = ECHO_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_names_the_missing_field() {
        assert_eq!(required(Some(3), "key"), Ok(3));
        let err = required::<u8>(None, "key").unwrap_err();
        assert_eq!(err.to_string(), "key is missing");
    }

    #[test]
    fn echo_cuts_long_values_at_a_character_boundary() {
        assert_eq!(echo("short"), "short");
        let long = format!("{}é{}", "a".repeat(63), "b".repeat(100));
        assert_eq!(echo(&long), format!("{}...", "a".repeat(63)));
    }

    #[test]
    fn unknown_enum_numbers_are_reported_as_received() {
        assert_eq!(
            known_enum::<crate::v1::Availability>(42),
            Err(Invalid::UnknownEnum(42))
        );
        assert_eq!(
            known_enum::<crate::v1::Availability>(-1),
            Err(Invalid::UnknownEnum(-1))
        );
    }
}
