//! The leader's wall clock, the one source of command timestamps. Injected, so tests and a
//! future simulation can drive time.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::map::Timestamp;

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch. It may jump; the map engine never lets time in the
    /// map run backwards (see `GatewayMap::apply`).
    fn now(&self) -> Timestamp;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }
}
