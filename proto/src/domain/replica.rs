//! Replicated volumes as hosts, storage backends and the replica registry speak of them,
//! after validation: typed ids, replicas with their portals, volumes, replica states, the
//! stages of a replacement and a host's state report.
//!
//! A host builds an MD RAID1 over a volume's replicas (one NVMe-oF namespace each); only the
//! host sees which leg went bad, so it reports [`ReplicaReport`]s, and the monitors drive a
//! replacement through the [`Stage`]s. See `replica.proto` for the protocol.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU64;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::Invalid;
use super::nqn::Nqn;
use super::uuid::Uuid;

/// A UUID-valued id of one kind of object, so that a replica id cannot be passed where a
/// volume id is expected.
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub struct $name(pub Uuid);

        impl FromStr for $name {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                s.parse().map($name)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(s: String) -> Result<Self, Invalid> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A replicated volume: what the compute side attaches, one md array per host.
    VolumeId
);
uuid_id!(
    /// One replica of a volume: one namespace on one storage backend, one leg of the array.
    ReplicaId
);
uuid_id!(
    /// A host's NVMe host id (`/etc/nvme/hostid`).
    HostId
);

/// Check a free-form name against a character set; see [`VolumeAlias`] and [`HostName`].
fn check_chars(
    s: &str,
    max: usize,
    allowed: &'static str,
    ok: fn(char) -> bool,
) -> Result<(), Invalid> {
    if s.len() > max {
        return Err(Invalid::TooLong { len: s.len(), max });
    }
    if let Some((pos, ch)) = s.char_indices().find(|&(_, c)| !ok(c)) {
        return Err(Invalid::BadChar { ch, pos, allowed });
    }
    Ok(())
}

/// The name of a volume's md array on the host, `/dev/md/<alias>`. mdadm stores the name in
/// a 32-byte superblock field, so it is at most 32 bytes; it becomes a path component and an
/// argument of `mdadm`, so only letters, digits and `. _ -`, and it starts with neither `.`
/// nor `-` (no hidden file, no `..`, no option).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeAlias(String);

impl VolumeAlias {
    pub const MAX_LEN: usize = 32;
    const ALLOWED: &'static str = "ASCII letters, digits and . _ -, not starting with . or -";

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn check(s: &str) -> Result<(), Invalid> {
        if s.is_empty() {
            return Err(Invalid::Empty);
        }
        check_chars(s, Self::MAX_LEN, Self::ALLOWED, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
        })?;
        if let Some(ch) = s.chars().next().filter(|c| matches!(c, '.' | '-')) {
            return Err(Invalid::BadChar {
                ch,
                pos: 0,
                allowed: Self::ALLOWED,
            });
        }
        Ok(())
    }
}

impl FromStr for VolumeAlias {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::check(s)?;
        Ok(VolumeAlias(s.to_owned()))
    }
}

impl TryFrom<String> for VolumeAlias {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::check(&s)?;
        Ok(VolumeAlias(s))
    }
}

impl From<VolumeAlias> for String {
    fn from(a: VolumeAlias) -> String {
        a.0
    }
}

impl fmt::Display for VolumeAlias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A host's name for people (its hostname). Empty means unknown. Printed in CLI tables and
/// logs, so restricted to the characters of host names and ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);

impl HostName {
    pub const MAX_LEN: usize = 255;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn check(s: &str) -> Result<(), Invalid> {
        check_chars(
            s,
            Self::MAX_LEN,
            "ASCII letters, digits and . _ - : @",
            |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@'),
        )
    }
}

impl FromStr for HostName {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::check(s)?;
        Ok(HostName(s.to_owned()))
    }
}

impl TryFrom<String> for HostName {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::check(&s)?;
        Ok(HostName(s))
    }
}

impl From<HostName> for String {
    fn from(n: HostName) -> String {
        n.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A replacement's number, unique in the cluster and never reused: every call about a
/// replacement names it, so a late call meant for an earlier replacement of the same volume
/// cannot advance a later one. Never zero, so an unset protobuf field is not taken for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct ReplacementId(NonZeroU64);

impl ReplacementId {
    pub const FIRST: ReplacementId = ReplacementId(NonZeroU64::MIN);

    pub fn new(id: u64) -> Result<Self, Invalid> {
        NonZeroU64::new(id).map(ReplacementId).ok_or(Invalid::Zero)
    }

    pub fn get(self) -> u64 {
        self.0.get()
    }

    /// The id after this one (saturating: 2^64 replacements will not happen).
    pub fn next(self) -> ReplacementId {
        ReplacementId(self.0.saturating_add(1))
    }
}

impl TryFrom<u64> for ReplacementId {
    type Error = Invalid;
    fn try_from(id: u64) -> Result<Self, Invalid> {
        ReplacementId::new(id)
    }
}

impl From<ReplacementId> for u64 {
    fn from(id: ReplacementId) -> u64 {
        id.get()
    }
}

impl fmt::Display for ReplacementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The NVMe-oF transports a replica can be reached over. os-brick maps `RoCEv2` and `rdma`
/// to rdma and everything else to tcp; we name them explicitly instead of guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Transport {
    Tcp,
    Rdma,
}

impl Transport {
    /// The name `nvme connect -t` takes and sysfs `transport` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Rdma => "rdma",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One address a replica's target accepts host connections on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Portal {
    pub transport: Transport,
    pub address: IpAddr,
    /// The transport service id: the TCP port.
    pub port: u16,
}

impl fmt::Display for Portal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            IpAddr::V4(a) => write!(f, "{}://{a}:{}", self.transport, self.port),
            IpAddr::V6(a) => write!(f, "{}://[{a}]:{}", self.transport, self.port),
        }
    }
}

/// A replica as the backend describes it: where a host connects to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaSpec {
    pub id: ReplicaId,
    /// The subsystem that exports the replica's namespace.
    pub target_nqn: Nqn,
    /// At least one, each at most once, in a canonical (sorted) order so that two specs of
    /// the same replica compare equal.
    pub portals: Vec<Portal>,
    /// The namespace UUID the host recognises the replica's device by, when the backend
    /// sets one.
    pub namespace_uuid: Option<Uuid>,
}

impl ReplicaSpec {
    /// At most this many portals per replica: a few per NIC and transport.
    pub const MAX_PORTALS: usize = 16;
}

/// A volume as the backend registers it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub id: VolumeId,
    pub alias: VolumeAlias,
    /// Never zero.
    pub capacity_bytes: u64,
    /// How many replicas the volume should have, 1 to [`VolumeSpec::MAX_REPLICAS`].
    pub replica_count: u32,
    /// How long a replica must be missing or faulty before a replacement is accepted, in
    /// milliseconds, at most [`VolumeSpec::MAX_GRACE_MS`]. Milliseconds as an integer,
    /// not minutes modulo an hour: KumoScale's agent got that arithmetic wrong.
    pub grace_period_ms: u64,
}

impl VolumeSpec {
    /// md RAID1 supports many more legs, but every leg is a full copy: 16 is far beyond any
    /// sensible replication factor and bounds the per-volume work.
    pub const MAX_REPLICAS: u32 = 16;
    /// 30 days: a longer grace period is a misconfiguration (a unit mix-up), not a policy.
    pub const MAX_GRACE_MS: u64 = 30 * 24 * 3600 * 1000;

    pub fn check_replica_count(n: u32) -> Result<u32, Invalid> {
        if n == 0 {
            return Err(Invalid::Zero);
        }
        if n > Self::MAX_REPLICAS {
            return Err(Invalid::OutOfRange {
                value: n.into(),
                min: 1,
                max: Self::MAX_REPLICAS.into(),
            });
        }
        Ok(n)
    }

    pub fn check_grace_ms(ms: u64) -> Result<u64, Invalid> {
        if ms > Self::MAX_GRACE_MS {
            return Err(Invalid::OutOfRange {
                value: ms,
                min: 0,
                max: Self::MAX_GRACE_MS,
            });
        }
        Ok(ms)
    }
}

/// A replica's state. Hosts report the first four; only the registry sets `Terminating`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReplicaState {
    /// An in-sync leg on a live controller.
    Available,
    /// A leg being resynced: its data is incomplete.
    Synchronizing,
    /// Not in the array, or its controller is not live; it may come back.
    Missing,
    /// md failed the leg: its data cannot be trusted.
    Faulty,
    /// Being retired by a replacement; never used again.
    Terminating,
}

impl ReplicaState {
    /// Missing or faulty: the states a replacement may be requested for once the grace
    /// period has passed.
    pub fn is_bad(self) -> bool {
        matches!(self, ReplicaState::Missing | ReplicaState::Faulty)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Available => "available",
            ReplicaState::Synchronizing => "synchronizing",
            ReplicaState::Missing => "missing",
            ReplicaState::Faulty => "faulty",
            ReplicaState::Terminating => "terminating",
        }
    }
}

impl fmt::Display for ReplicaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stages of a replacement, in order (`Cancelled` is the one way out before a replica
/// was supplied). Ordered so that "has reached" is a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Stage {
    /// Asked for; the backend has not supplied a new replica yet.
    Requested,
    /// The backend supplied the new replica: the host connects it and adds it as a leg.
    Supplied,
    /// The host added the new leg; md resyncs onto it.
    Attached,
    /// The new leg is in sync: the new replica is available, the old one terminating.
    Synced,
    /// The host took the old leg out: the backend deletes the old replica and confirms.
    Retired,
    /// Finished: the old replica is gone.
    Done,
    /// Given up before a replica was supplied.
    Cancelled,
}

impl Stage {
    /// Whether nothing more happens to this replacement.
    pub fn is_final(self) -> bool {
        matches!(self, Stage::Done | Stage::Cancelled)
    }

    /// The stages a host acknowledges, and the stage each one follows.
    pub fn acknowledged_after(self) -> Option<Stage> {
        match self {
            Stage::Attached => Some(Stage::Supplied),
            Stage::Synced => Some(Stage::Attached),
            Stage::Retired => Some(Stage::Synced),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Requested => "requested",
            Stage::Supplied => "supplied",
            Stage::Attached => "attached",
            Stage::Synced => "synced",
            Stage::Retired => "retired",
            Stage::Done => "done",
            Stage::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a host sees of one replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaReport {
    pub replica: ReplicaId,
    /// Never `Terminating`: the conversion refuses it.
    pub state: ReplicaState,
    /// Resync progress in per mille (0 to 1000), while synchronizing.
    pub sync_permille: Option<u16>,
}

impl ReplicaReport {
    /// At most this many replica reports per request: a volume has at most
    /// [`VolumeSpec::MAX_REPLICAS`], plus room for a replacement in flight.
    pub const MAX_PER_REQUEST: usize = 32;

    pub fn check_permille(p: u32) -> Result<u16, Invalid> {
        match u16::try_from(p) {
            Ok(v) if v <= 1000 => Ok(v),
            _ => Err(Invalid::OutOfRange {
                value: p.into(),
                min: 0,
                max: 1000,
            }),
        }
    }
}

/// Who a host is: its host NQN (the registry's key for it), its host id and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostIdentity {
    pub nqn: Nqn,
    pub id: Option<HostId>,
    pub name: HostName,
}

/// Why a cancellation happened, kept on record: printable ASCII, at most 256 bytes.
pub fn check_reason(s: &str) -> Result<(), Invalid> {
    const MAX: usize = 256;
    check_chars(s, MAX, "printable ASCII", |c| {
        c.is_ascii_graphic() || c == ' '
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_md_names() {
        assert!("vol-1.data_2".parse::<VolumeAlias>().is_ok());
        assert_eq!("".parse::<VolumeAlias>(), Err(Invalid::Empty));
        for bad in [".hidden", "-rf", "a/b", "a b"] {
            assert!(
                matches!(bad.parse::<VolumeAlias>(), Err(Invalid::BadChar { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            "x".repeat(33).parse::<VolumeAlias>(),
            Err(Invalid::TooLong { len: 33, max: 32 })
        ));
    }

    #[test]
    fn host_names_may_be_empty_but_not_odd() {
        assert!("".parse::<HostName>().is_ok());
        assert!("compute-1.example.org".parse::<HostName>().is_ok());
        assert!("a\nb".parse::<HostName>().is_err());
    }

    #[test]
    fn stages_are_ordered_and_acknowledged_in_order() {
        assert!(Stage::Requested < Stage::Supplied && Stage::Retired < Stage::Done);
        assert_eq!(Stage::Synced.acknowledged_after(), Some(Stage::Attached));
        assert_eq!(Stage::Done.acknowledged_after(), None);
        assert!(Stage::Cancelled.is_final() && !Stage::Retired.is_final());
    }

    #[test]
    fn ids_of_different_kinds_share_the_uuid_syntax() {
        let v: VolumeId = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6".parse().expect("id");
        assert_eq!(v.to_string(), "f81d4fae-7dec-11d0-a765-00a0c91e6bf6");
        assert!("vol1".parse::<ReplicaId>().is_err());
        assert_eq!(ReplacementId::new(0), Err(Invalid::Zero));
        assert_eq!(ReplacementId::FIRST.next().get(), 2);
    }

    #[test]
    fn permille_is_bounded() {
        assert_eq!(ReplicaReport::check_permille(1000), Ok(1000));
        assert!(ReplicaReport::check_permille(1001).is_err());
        assert!(ReplicaReport::check_permille(u32::MAX).is_err());
    }
}
