//! Versioned binary encodings. Every persisted value starts with a format version byte, so
//! a later release can read what an earlier one wrote, or refuse it clearly.
//!
//! The body is bincode 1.3 (fixed-width integers, little endian). bincode is frozen
//! upstream; keeping it behind this one module means a move to another codec is a new
//! version number here and nothing else.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest value decoded. A corrupt length prefix must fail cleanly, not make the
/// decoder allocate without bound.
pub const MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(MAX_DECODED_BYTES)
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty input: no format version byte")]
    Empty,
    #[error("unknown format version {found} for {what}; this build reads version {supported}")]
    Version {
        what: &'static str,
        found: u8,
        supported: u8,
    },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: bincode::Error,
    },
    #[error("corrupt {what}: {source}")]
    Decode {
        what: &'static str,
        source: bincode::Error,
    },
    /// Decoded, but holding what that value never holds.
    #[error("corrupt {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
}

/// A value with a persisted encoding.
pub trait Versioned: Serialize + DeserializeOwned {
    /// What the value is, for error messages.
    const WHAT: &'static str;
    /// The format written by this build.
    const VERSION: u8;

    /// An older format this build still reads, converted: `None` for a version it does
    /// not know (the default: only [`Versioned::VERSION`] is read).
    fn decode_older(version: u8, body: &[u8]) -> Option<Result<Self, CodecError>> {
        let _ = (version, body);
        None
    }

    /// The version this value is written as: [`Versioned::VERSION`] unless the value can
    /// still be written in an older layout that an earlier release reads (the gateway map
    /// at feature level 0).
    fn written_version(&self) -> u8 {
        Self::VERSION
    }
}

/// The body of an older version, for [`Versioned::decode_older`].
pub fn decode_body<T: DeserializeOwned>(what: &'static str, body: &[u8]) -> Result<T, CodecError> {
    options()
        .deserialize(body)
        .map_err(|source| CodecError::Decode { what, source })
}

/// The size of a value's body as [`encode`] writes it (without the version byte), or
/// `None` if it cannot be encoded within [`MAX_DECODED_BYTES`].
pub fn body_len<T: Serialize>(value: &T) -> Option<u64> {
    options().serialized_size(value).ok()
}

pub fn encode<T: Versioned>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![value.written_version()];
    options()
        .serialize_into(&mut out, value)
        .map_err(|source| CodecError::Encode {
            what: T::WHAT,
            source,
        })?;
    Ok(out)
}

pub fn decode<T: Versioned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != T::VERSION {
        if let Some(older) = T::decode_older(version, body) {
            return older;
        }
        return Err(CodecError::Version {
            what: T::WHAT,
            found: version,
            supported: T::VERSION,
        });
    }
    options()
        .deserialize(body)
        .map_err(|source| CodecError::Decode {
            what: T::WHAT,
            source,
        })
}

// Version 2 of the map and its commands: the tunables gained `max_groups` and
// `max_gateways`. Version 1 is read with their defaults (see `map::config::MapConfigV1`).
// Version 3 of the map: groups gained flap damping; older maps read with nobody damped.
// Version 4: the feature level, written only once it is above 0 (version 3 otherwise).
// Version 5: groups gained namespace placements, written from feature level 3.
impl Versioned for crate::map::GatewayMap {
    const WHAT: &'static str = "gateway map";
    const VERSION: u8 = 5;

    fn decode_older(version: u8, body: &[u8]) -> Option<Result<Self, CodecError>> {
        match version {
            1 => Some(crate::map::GatewayMap::decode_v1(body)),
            2 => Some(crate::map::GatewayMap::decode_v2(body)),
            3 => Some(crate::map::GatewayMap::decode_v3(body)),
            4 => Some(crate::map::GatewayMap::decode_v4(body)),
            _ => None,
        }
    }

    fn written_version(&self) -> u8 {
        crate::map::GatewayMap::written_version(self)
    }
}

impl Versioned for crate::map::Command {
    const WHAT: &'static str = "map command";
    const VERSION: u8 = 2;

    fn decode_older(version: u8, body: &[u8]) -> Option<Result<Self, CodecError>> {
        (version == 1).then(|| crate::map::Command::decode_v1(body))
    }
}

impl Versioned for crate::replica::ReplicaRegistry {
    const WHAT: &'static str = "replica registry";
    const VERSION: u8 = 1;
}

impl Versioned for crate::replica::ReplicaCommand {
    const WHAT: &'static str = "replica command";
    const VERSION: u8 = 1;
}
