//! UUIDs, the ids of replicated volumes and their replicas (as os-brick, KumoScale and
//! Mayastor use them) and of hosts (`/etc/nvme/hostid`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::Invalid;

/// A UUID held as its 16 bytes. Parsed from the hyphenated text form in either case and
/// printed in lower case, so that two spellings of one id compare equal and a host can match
/// it against the lower-case `uuid` files of sysfs.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Uuid([u8; 16]);

impl Uuid {
    /// The length of the text form, `8-4-4-4-12` hex digits.
    pub const TEXT_LEN: usize = 36;

    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Uuid(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Whether this is the nil UUID (all zero), which names nothing.
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl FromStr for Uuid {
    type Err = Invalid;

    /// Accepts exactly the hyphenated form; the nil UUID is refused because a client that
    /// sends it has not set the field.
    fn from_str(s: &str) -> Result<Self, Invalid> {
        if s.is_empty() {
            return Err(Invalid::Empty);
        }
        let b = s.as_bytes();
        if b.len() != Self::TEXT_LEN {
            return Err(Invalid::Uuid(
                "must be 36 characters, 8-4-4-4-12 hex digits",
            ));
        }
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        for (i, &c) in b.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return Err(Invalid::Uuid("hyphens must be at 8, 13, 18 and 23"));
                }
                continue;
            }
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(Invalid::Uuid("only hex digits between the hyphens")),
            };
            let byte = &mut out[nibbles / 2];
            *byte = (*byte << 4) | v;
            nibbles += 1;
        }
        let uuid = Uuid(out);
        if uuid.is_nil() {
            return Err(Invalid::Uuid("the nil UUID names nothing"));
        }
        Ok(uuid)
    }
}

impl TryFrom<String> for Uuid {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        s.parse()
    }
}

impl From<Uuid> for String {
    fn from(u: Uuid) -> String {
        u.to_string()
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_either_case_and_prints_lower_case() {
        let u: Uuid = "F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6"
            .parse()
            .expect("uuid");
        assert_eq!(u.to_string(), "f81d4fae-7dec-11d0-a765-00a0c91e6bf6");
        assert_eq!(
            u,
            "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
                .parse()
                .expect("uuid")
        );
        assert_eq!(u.as_bytes()[0], 0xf8);
        assert_eq!(u.as_bytes()[15], 0xf6);
    }

    #[test]
    fn refuses_other_forms_with_a_reason() {
        assert_eq!("".parse::<Uuid>(), Err(Invalid::Empty));
        for bad in [
            "f81d4fae7dec11d0a76500a0c91e6bf6",
            "{f81d4fae-7dec-11d0-a765-00a0c91e6bf6}",
            "f81d4fae-7dec-11d0-a765_00a0c91e6bf6",
            "g81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "00000000-0000-0000-0000-000000000000",
            "é1d4fae-7dec-11d0-a765-00a0c91e6bf6",
        ] {
            assert!(
                matches!(bad.parse::<Uuid>(), Err(Invalid::Uuid(_))),
                "{bad}"
            );
        }
    }
}
