//! NVMe Qualified Names, checked against the NVMe Base Specification's two formats:
//! `nqn.yyyy-mm.<reverse domain>[:<anything>]` and `nqn.2014-08.org.nvmexpress:uuid:<uuid>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::Invalid;

/// A validated NQN. At most 223 bytes, as the specification and Linux's `NVMF_NQN_SIZE` require.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Nqn(String);

impl Nqn {
    pub const MAX_LEN: usize = 223;
    const UUID_PREFIX: &'static str = "nqn.2014-08.org.nvmexpress:uuid:";

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn check(s: &str) -> Result<(), Invalid> {
        if s.is_empty() {
            return Err(Invalid::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(Invalid::TooLong {
                len: s.len(),
                max: Self::MAX_LEN,
            });
        }
        if let Some((pos, ch)) = s
            .char_indices()
            .find(|(_, c)| c.is_whitespace() || c.is_control())
        {
            return Err(Invalid::BadChar {
                ch,
                pos,
                allowed: "no spaces or control characters",
            });
        }
        let rest = s
            .strip_prefix("nqn.")
            .ok_or(Invalid::Nqn("must start with \"nqn.\""))?;
        let date = rest.get(..7).ok_or(Invalid::Nqn("missing yyyy-mm date"))?;
        let b = date.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if !(digits(0..4) && b[4] == b'-' && digits(5..7)) {
            return Err(Invalid::Nqn("date must be yyyy-mm"));
        }
        let month = (b[5] - b'0') * 10 + (b[6] - b'0');
        if !(1..=12).contains(&month) {
            return Err(Invalid::Nqn("month must be 01 to 12"));
        }
        let rest = rest[7..]
            .strip_prefix('.')
            .ok_or(Invalid::Nqn("a '.' must follow the date"))?;
        let (domain, user) = match rest.split_once(':') {
            Some((d, u)) => (d, Some(u)),
            None => (rest, None),
        };
        if domain.is_empty()
            || !domain
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
        {
            return Err(Invalid::Nqn(
                "reverse domain must be letters, digits, '-' and '.'",
            ));
        }
        if user == Some("") {
            return Err(Invalid::Nqn("nothing after ':'"));
        }
        if let Some(uuid) = s.strip_prefix(Self::UUID_PREFIX) {
            if !is_uuid(uuid) {
                return Err(Invalid::Nqn("uuid form needs a uuid after \":uuid:\""));
            }
        }
        Ok(())
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl FromStr for Nqn {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Nqn::check(s)?;
        Ok(Nqn(s.to_owned()))
    }
}

impl TryFrom<String> for Nqn {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Nqn::check(&s)?;
        Ok(Nqn(s))
    }
}

impl From<Nqn> for String {
    fn from(n: Nqn) -> String {
        n.0
    }
}

impl fmt::Display for Nqn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_specified_forms() {
        for ok in [
            "nqn.2016-06.io.spdk:cnode1",
            "nqn.2014-08.org.nvmexpress.discovery",
            "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "nqn.2001-04.com.example:storage:disk2.sys1.xyz",
        ] {
            assert!(ok.parse::<Nqn>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_malformed_names_with_a_reason() {
        let cases = [
            ("", Invalid::Empty),
            (
                "iqn.2016-06.io.spdk:x",
                Invalid::Nqn("must start with \"nqn.\""),
            ),
            ("nqn.16-06.io.spdk:x", Invalid::Nqn("date must be yyyy-mm")),
            (
                "nqn.2016-13.io.spdk:x",
                Invalid::Nqn("month must be 01 to 12"),
            ),
            ("nqn.2016-06:io", Invalid::Nqn("a '.' must follow the date")),
            (
                "nqn.2016-06.:x",
                Invalid::Nqn("reverse domain must be letters, digits, '-' and '.'"),
            ),
            ("nqn.2016-06.io.spdk:", Invalid::Nqn("nothing after ':'")),
            (
                "nqn.2014-08.org.nvmexpress:uuid:nope",
                Invalid::Nqn("uuid form needs a uuid after \":uuid:\""),
            ),
            ("nqn.2016", Invalid::Nqn("missing yyyy-mm date")),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Nqn>(), Err(want), "{input:?}");
        }
        assert!(matches!(
            "nqn.2016-06.io.spdk:a b".parse::<Nqn>(),
            Err(Invalid::BadChar { ch: ' ', .. })
        ));
        let long = format!("nqn.2016-06.io.spdk:{}", "x".repeat(204));
        assert!(matches!(
            long.parse::<Nqn>(),
            Err(Invalid::TooLong { len: 224, .. })
        ));
    }

    #[test]
    fn never_panics_on_multibyte_input() {
        for s in ["nqn.é", "nqn.2016-0é", "é", "nqn.2016-06.ü:x"] {
            let _ = s.parse::<Nqn>();
        }
    }
}
