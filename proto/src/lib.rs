//! gwmon's shared language.
//!
//! * [`domain`]: typed ids, NQNs and the validated forms of beacons and map slices.
//! * [`v1`]: the gRPC messages and services generated from `proto/gwmon/v1/*.proto`.
//! * [`convert`]: the conversions between the two, refusing bad input with the field's path.
//! * [`leader`]: the not-leader redirect (the `gwmon-leader` header) both sides follow.
//! * [`addr`]: monitor addresses as clients take them: URI and dial check.
//! * [`target_file`]: the lock and atomic replacement the file adapter and the file fencer
//!   share over a gateway's target file.
//! * [`tls`]: mutual TLS: a party's CA, certificate and key, checked, and the server and
//!   client configurations made from them.

pub mod addr;
pub mod codec;
pub mod convert;
pub mod domain;
pub mod leader;
pub mod mutation;
pub mod target_file;
pub mod tls;

pub use leader::LEADER_HEADER;

/// The largest request the monitors' client services (gateway, admin, replica) accept, and
/// the largest message their clients send. A beacon at every bound of [`convert`] fits with
/// room to spare; anything larger is refused by gRPC before it is read (`OUT_OF_RANGE`).
/// Raft between monitors has a limit of its own, sized for batches and snapshot chunks, so
/// whatever a client can get committed also fits in one Raft message.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Generated from `proto/gwmon/v1/*.proto` by `build.rs` (protox, no system `protoc`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("gwmon.v1");
}
