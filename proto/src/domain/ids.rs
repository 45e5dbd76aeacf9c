//! Typed identifiers. Each is parsed once, at the edge, and cannot hold an invalid value.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::Invalid;

const NAME_CHARS: &str = "ASCII letters, digits and . _ - : @, not starting with '-'";

/// Check a name id. Besides the character set, a name must not start with `-` and must not
/// be `.` or `..`: ids end up as arguments of fencing commands (where a leading `-` would
/// be read as an option) and in file and metric names (where `..` walks up a directory).
fn check_name(s: &str, max: usize, allow_empty: bool) -> Result<(), Invalid> {
    if s.is_empty() && !allow_empty {
        return Err(Invalid::Empty);
    }
    if s.len() > max {
        return Err(Invalid::TooLong { len: s.len(), max });
    }
    for (pos, ch) in s.char_indices() {
        let allowed = ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-' | ':' | '@');
        if !allowed || (pos == 0 && ch == '-') {
            return Err(Invalid::BadChar {
                ch,
                pos,
                allowed: NAME_CHARS,
            });
        }
    }
    if s == "." || s == ".." {
        return Err(Invalid::BadChar {
            ch: '.',
            pos: 0,
            allowed: "a name other than \".\" or \"..\"",
        });
    }
    Ok(())
}

/// A string id with a checked character set. `$empty` says whether "" is a valid value.
macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, empty = $empty:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest value accepted, in bytes.
            pub const MAX_LEN: usize = $max;

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                check_name(s, $max, $empty)?;
                Ok($name(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(s: String) -> Result<Self, Invalid> {
                check_name(&s, $max, $empty)?;
                Ok($name(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_id!(
    /// A gateway's name, unique within its `(pool, group)`; cephadm-style ids such as
    /// `client.nvmeof.rbd.grp1.host1.abcdef` fit.
    GatewayId, max = 255, empty = false
);
name_id!(
    /// The storage pool a gateway group serves.
    Pool, max = 128, empty = false
);
name_id!(
    /// A gateway group within a pool. Empty is valid: it is Ceph's default group.
    Group, max = 128, empty = true
);
name_id!(
    /// A site or rack label. Empty means "no location"; failover prefers the same location.
    Location, max = 64, empty = true
);

impl Default for Location {
    /// No location: failover then treats all gateways of the group alike.
    fn default() -> Self {
        Location(String::new())
    }
}

/// The key of a gateway group: one independent map, one set of ANA groups.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    pub pool: Pool,
    pub group: Group,
}

impl GroupKey {
    pub fn new(pool: Pool, group: Group) -> Self {
        GroupKey { pool, group }
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.pool, self.group)
    }
}

/// An NVMe ANA group id as the target and host see it: 1-based, never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct AnaGroupId(NonZeroU32);

impl AnaGroupId {
    /// The largest id gwmon will ever allocate; Linux nvmet supports 128 ANA groups per port.
    pub const MAX: u32 = 128;

    pub fn new(id: u32) -> Result<Self, Invalid> {
        match NonZeroU32::new(id) {
            None => Err(Invalid::Zero),
            Some(_) if id > Self::MAX => Err(Invalid::OutOfRange {
                value: id.into(),
                min: 1,
                max: Self::MAX.into(),
            }),
            Some(n) => Ok(AnaGroupId(n)),
        }
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl TryFrom<u32> for AnaGroupId {
    type Error = Invalid;
    fn try_from(id: u32) -> Result<Self, Invalid> {
        AnaGroupId::new(id)
    }
}

impl From<AnaGroupId> for u32 {
    fn from(id: AnaGroupId) -> u32 {
        id.get()
    }
}

impl fmt::Display for AnaGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A monotonically increasing version: the map epoch, a group's epoch (the fencing token)
/// or an epoch a gateway reports it has applied. Zero means "none yet".
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

impl Epoch {
    pub const ZERO: Epoch = Epoch(0);

    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A monitor's Raft node id. Zero is refused so that an unset protobuf field is never taken
/// for a real node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct MonitorId(std::num::NonZeroU64);

impl MonitorId {
    pub fn new(id: u64) -> Result<Self, Invalid> {
        std::num::NonZeroU64::new(id)
            .map(MonitorId)
            .ok_or(Invalid::Zero)
    }

    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl TryFrom<u64> for MonitorId {
    type Error = Invalid;
    fn try_from(id: u64) -> Result<Self, Invalid> {
        MonitorId::new(id)
    }
}

impl From<MonitorId> for u64 {
    fn from(id: MonitorId) -> u64 {
        id.get()
    }
}

impl FromStr for MonitorId {
    type Err = Invalid;
    /// Parses a decimal id, saying what is wrong: an empty string, a non-digit and where it
    /// is, or a number beyond `u64`.
    fn from_str(s: &str) -> Result<Self, Invalid> {
        if s.is_empty() {
            return Err(Invalid::Empty);
        }
        if let Some((pos, ch)) = s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            return Err(Invalid::BadChar {
                ch,
                pos,
                allowed: "decimal digits",
            });
        }
        // Only digits remain, so the one way to fail is overflow, which takes at least 20
        // digits; every 19-digit id fits, hence the limit named.
        let n: u64 = s.parse().map_err(|_| Invalid::TooLong {
            len: s.len(),
            max: 19,
        })?;
        MonitorId::new(n)
    }
}

impl fmt::Display for MonitorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An opaque fencing nonce a gateway reports per namespace: for Ceph, the address of the RADOS
/// client context the namespace's I/O goes through. The fencer receives it verbatim.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Nonce(Arc<str>);

impl Nonce {
    pub const MAX_LEN: usize = 256;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether both are one shared value, not only equal ([`super::share_nonces`]).
    pub fn is_shared_with(&self, other: &Nonce) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl TryFrom<String> for Nonce {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        if s.len() > Self::MAX_LEN {
            return Err(Invalid::TooLong {
                len: s.len(),
                max: Self::MAX_LEN,
            });
        }
        if let Some((pos, ch)) = s.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
            return Err(Invalid::BadChar {
                ch,
                pos,
                allowed: "printable ASCII without spaces",
            });
        }
        if s.is_empty() {
            return Err(Invalid::Empty);
        }
        Ok(Nonce(s.into()))
    }
}

impl FromStr for Nonce {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Nonce::try_from(s.to_owned())
    }
}

impl From<Nonce> for String {
    fn from(n: Nonce) -> String {
        n.0.as_ref().to_owned()
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_ids_accept_cephadm_names_and_refuse_the_rest() {
        assert!("client.nvmeof.rbd.grp1.node-1.abc_DEF:0@x"
            .parse::<GatewayId>()
            .is_ok());
        assert_eq!("".parse::<GatewayId>(), Err(Invalid::Empty));
        assert!(matches!(
            "gw 1".parse::<GatewayId>(),
            Err(Invalid::BadChar {
                ch: ' ',
                pos: 2,
                ..
            })
        ));
        assert!(matches!(
            "x".repeat(256).parse::<GatewayId>(),
            Err(Invalid::TooLong { len: 256, max: 255 })
        ));
        assert!(matches!(
            "gw/1".parse::<GatewayId>(),
            Err(Invalid::BadChar { ch: '/', .. })
        ));
    }

    #[test]
    fn group_may_be_empty_but_pool_may_not() {
        assert!("".parse::<Group>().is_ok());
        assert_eq!("".parse::<Pool>(), Err(Invalid::Empty));
    }

    #[test]
    fn ana_group_ids_are_one_based_and_bounded() {
        assert_eq!(AnaGroupId::new(0), Err(Invalid::Zero));
        assert_eq!(AnaGroupId::new(1).map(AnaGroupId::get), Ok(1));
        assert_eq!(AnaGroupId::new(128).map(AnaGroupId::get), Ok(128));
        assert!(matches!(
            AnaGroupId::new(129),
            Err(Invalid::OutOfRange { value: 129, .. })
        ));
    }

    #[test]
    fn serde_goes_through_validation() {
        let bad: Result<GatewayId, _> = serde_json::from_str("\"a b\"");
        assert!(bad.is_err());
        let bad: Result<AnaGroupId, _> = serde_json::from_str("0");
        assert!(bad.is_err());
        let good: GatewayId = serde_json::from_str("\"gw1\"").expect("valid id");
        assert_eq!(good.as_str(), "gw1");
    }

    #[test]
    fn nonces_are_printable_and_bounded() {
        assert!("10.0.0.1:0/3141592".parse::<Nonce>().is_ok());
        assert_eq!("".parse::<Nonce>(), Err(Invalid::Empty));
        assert!(matches!(
            "a b".parse::<Nonce>(),
            Err(Invalid::BadChar { ch: ' ', .. })
        ));
    }

    #[test]
    fn monitor_id_zero_is_refused() {
        assert_eq!(MonitorId::new(0), Err(Invalid::Zero));
        assert_eq!("7".parse::<MonitorId>().map(MonitorId::get), Ok(7));
        assert!("x".parse::<MonitorId>().is_err());
        assert!(matches!(
            "12a".parse::<MonitorId>(),
            Err(Invalid::BadChar {
                ch: 'a',
                pos: 2,
                ..
            })
        ));
        assert_eq!("".parse::<MonitorId>(), Err(Invalid::Empty));
        assert_eq!("0".parse::<MonitorId>(), Err(Invalid::Zero));
        assert!(matches!(
            "99999999999999999999".parse::<MonitorId>(),
            Err(Invalid::TooLong { len: 20, .. })
        ));
    }

    #[test]
    fn names_cannot_pass_for_options_or_parent_directories() {
        assert!(matches!(
            "-rf".parse::<GatewayId>(),
            Err(Invalid::BadChar {
                ch: '-',
                pos: 0,
                ..
            })
        ));
        assert!("gw-1".parse::<GatewayId>().is_ok());
        for dots in [".", ".."] {
            assert!(matches!(
                dots.parse::<GatewayId>(),
                Err(Invalid::BadChar {
                    ch: '.',
                    pos: 0,
                    ..
                })
            ));
            assert!(dots.parse::<Location>().is_err());
        }
        // Ceph's own pools start with a dot (".mgr", ".nfs"); they stay valid.
        assert!(".mgr".parse::<Pool>().is_ok());
    }
}
