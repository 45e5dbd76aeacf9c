//! Time as the map engine sees it: a value carried inside each command.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, as read by the leader that proposed the command.
///
/// The engine never reads a clock: every replica applies the same command with the same
/// `Timestamp`, so every replica computes the same map. Deadlines stored in the map are
/// `Timestamp`s too, which makes them survive a leader change (a new leader's clock may
/// differ a little; timers are coarse, seconds, so that skew is harmless).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + ms`, saturating: a deadline far in the future is still a deadline.
    pub fn after(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// `self - ms`, saturating at zero.
    pub fn before(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_sub(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}
