//! The leader's wall clock, the one source of command timestamps. Injected, so tests and a
//! future simulation can drive time.

use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

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

/// How fast the map's time may run ahead of the monotonic time elapsed on the leader, to
/// catch up with the wall clock after the whole cluster was down: twice real time, so an
/// outage of an hour is caught up in an hour, while a leader whose wall clock jumped hours
/// ahead can move the map's time only that much faster than real time.
pub const MAP_TIME_CATCH_UP: u32 = 2;

/// A map time and the local monotonic instant it was known at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeAnchor {
    pub time: Timestamp,
    pub at: Instant,
}

impl TimeAnchor {
    /// The range `wall` is kept in at `now`: no slower than real time since this anchor
    /// and no faster than [`MAP_TIME_CATCH_UP`] times it.
    fn bounds(&self, now: Instant) -> (Timestamp, Timestamp) {
        let elapsed =
            u64::try_from(now.saturating_duration_since(self.at).as_millis()).unwrap_or(u64::MAX);
        let fastest = elapsed.saturating_mul(u64::from(MAP_TIME_CATCH_UP));
        (self.time.after(elapsed), self.time.after(fastest))
    }
}

/// The times a monitor stamps on the commands it proposes: the wall clock, kept within
/// what the monotonic clock allows since two anchors, the latest command applied here and
/// the latest stamp this monitor handed out. Within those bounds a wall clock set back
/// cannot freeze the map's timers and one set hours ahead cannot expire fences early.
///
/// The second anchor is what keeps the map's time on the wall clock under a steady stream
/// of commits. Bounded by the applied command alone, a stamp taken while earlier commands
/// are still committing may run only twice as fast as the time since the last apply,
/// which loses each commit's latency again; with 5,000 gateways confirming a change the
/// map's time fell a second behind.
#[derive(Debug, Default)]
pub struct MapClock {
    stamped: Mutex<Option<TimeAnchor>>,
}

impl MapClock {
    /// The stamp for a command proposed at `now`, given the wall clock's reading and the
    /// latest command applied here (a zero time: none yet).
    pub fn stamp(&self, wall: Timestamp, applied: TimeAnchor, now: Instant) -> Timestamp {
        let mut stamped = self.stamped.lock().unwrap_or_else(PoisonError::into_inner);
        let anchors = [Some(applied), *stamped]
            .into_iter()
            .flatten()
            .filter(|a| a.time != Timestamp::ZERO);
        let bounds = anchors
            .map(|a| a.bounds(now))
            .reduce(|(s1, f1), (s2, f2)| (s1.max(s2), f1.max(f2)));
        // Each anchor's lower bound is at most its upper bound, so the larger of each is too.
        let time = bounds.map_or(wall, |(slowest, fastest)| wall.clamp(slowest, fastest));
        *stamped = Some(TimeAnchor { time, at: now });
        time
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use super::*;

    fn none(at: Instant) -> TimeAnchor {
        TimeAnchor {
            time: Timestamp::ZERO,
            at,
        }
    }

    fn ms(t: Timestamp) -> u64 {
        t.as_millis()
    }

    #[test]
    fn the_first_stamp_is_the_wall_clock() {
        let clock = MapClock::default();
        let t0 = Instant::now();
        let wall = Timestamp::from_millis(1_000_000);
        assert_eq!(clock.stamp(wall, none(t0), t0), wall);
    }

    /// The interleaving that made the map's time lag: a command is stamped every
    /// millisecond and each applies 20 ms after its stamp, so the latest applied command is
    /// always 20 ms old when the next is stamped. Every stamp must still read the wall.
    #[test]
    fn a_steady_stream_of_commits_keeps_stamps_on_the_wall_clock() {
        let clock = MapClock::default();
        let t0 = Instant::now();
        let wall0 = 1_000_000;
        let latency = 20;
        let mut in_flight: VecDeque<(u64, Timestamp)> = VecDeque::new();
        let mut applied = none(t0);
        for tick in 0..5_000u64 {
            let now = t0 + Duration::from_millis(tick);
            while in_flight.front().is_some_and(|(due, _)| *due <= tick) {
                if let Some((due, time)) = in_flight.pop_front() {
                    applied = TimeAnchor {
                        time,
                        at: t0 + Duration::from_millis(due),
                    };
                }
            }
            let wall = Timestamp::from_millis(wall0 + tick);
            let stamp = clock.stamp(wall, applied, now);
            assert_eq!(ms(stamp), wall0 + tick, "stamp {tick} lags the wall clock");
            in_flight.push_back((tick + latency, stamp));
        }
    }

    #[test]
    fn a_clock_set_ahead_moves_stamps_at_most_twice_real_time() {
        let clock = MapClock::default();
        let t0 = Instant::now();
        let start = clock.stamp(Timestamp::from_millis(1_000_000), none(t0), t0);
        let ahead = Timestamp::from_millis(1_000_000 + 3_600_000);
        let mut previous = start;
        for step in 1..=100u64 {
            let now = t0 + Duration::from_millis(step * 10);
            let stamp = clock.stamp(ahead, none(t0), now);
            assert_eq!(
                ms(stamp),
                ms(start) + step * 10 * u64::from(MAP_TIME_CATCH_UP)
            );
            assert!(stamp > previous);
            previous = stamp;
        }
    }

    #[test]
    fn a_clock_set_back_moves_stamps_at_real_time_and_never_back() {
        let clock = MapClock::default();
        let t0 = Instant::now();
        let start = clock.stamp(Timestamp::from_millis(1_000_000), none(t0), t0);
        let behind = Timestamp::from_millis(1_000_000 - 600_000);
        for step in 1..=100u64 {
            let now = t0 + Duration::from_millis(step * 10);
            let stamp = clock.stamp(behind, none(t0), now);
            assert_eq!(ms(stamp), ms(start) + step * 10);
        }
    }

    /// A command another leader stamped later than this monitor's last stamp raises the
    /// floor: the map's time never runs backwards across a change of leader.
    #[test]
    fn a_later_applied_command_raises_the_floor() {
        let clock = MapClock::default();
        let t0 = Instant::now();
        clock.stamp(Timestamp::from_millis(1_000_000), none(t0), t0);
        let applied = TimeAnchor {
            time: Timestamp::from_millis(1_005_000),
            at: t0,
        };
        let now = t0 + Duration::from_millis(10);
        let stamp = clock.stamp(Timestamp::from_millis(900_000), applied, now);
        assert_eq!(ms(stamp), 1_005_010);
    }
}
