//! The leader's wall clock, the one source of command timestamps. Injected, so tests and a
//! future simulation can drive time.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// and no faster than [`MAP_TIME_CATCH_UP`] times it. The wall clock reads whole
    /// milliseconds and the anchor may have been taken up to one into its time, so the
    /// upper bound allows one more.
    fn bounds(&self, now: Instant) -> (Timestamp, Timestamp) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let elapsed = now.saturating_duration_since(self.at);
        let fastest = ms(elapsed.saturating_mul(MAP_TIME_CATCH_UP)).saturating_add(1);
        (self.time.after(ms(elapsed)), self.time.after(fastest))
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
        // Only a stamp that is the wall clock's reading and a later millisecond anchors the
        // next; the anchor keeps the first instant its time was seen. Bounds are counted
        // in whole milliseconds, so re-anchoring on a clamped stamp, or on the same
        // millisecond later, would drop the fraction every time, and stamps a few hundred
        // microseconds apart would hold the map's time still.
        if time == wall && stamped.is_none_or(|s| time > s.time) {
            *stamped = Some(TimeAnchor { time, at: now });
        }
        time
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

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

    /// Commands stamped every `step_us` microseconds, each applied `latency_ms` after its
    /// stamp, on a wall clock that reads whole milliseconds: every stamp must read the wall.
    fn steady_stream(step_us: u64, latency_ms: u64) {
        let clock = MapClock::default();
        let t0 = Instant::now();
        let wall0 = 1_000_000;
        let mut in_flight: VecDeque<(Duration, Timestamp)> = VecDeque::new();
        let mut applied = none(t0);
        for tick in 0..20_000u64 {
            let elapsed = Duration::from_micros(tick * step_us);
            while in_flight.front().is_some_and(|(due, _)| *due <= elapsed) {
                if let Some((due, time)) = in_flight.pop_front() {
                    applied = TimeAnchor { time, at: t0 + due };
                }
            }
            let wall = wall0 + tick * step_us / 1_000;
            let stamp = clock.stamp(Timestamp::from_millis(wall), applied, t0 + elapsed);
            assert_eq!(ms(stamp), wall, "stamp {tick} lags the wall clock");
            in_flight.push_back((elapsed + Duration::from_millis(latency_ms), stamp));
        }
    }

    /// The interleaving that made the map's time lag: a command is stamped every
    /// millisecond and each applies 20 ms after its stamp, so the latest applied command is
    /// always 20 ms old when the next is stamped.
    #[test]
    fn a_steady_stream_of_commits_keeps_stamps_on_the_wall_clock() {
        steady_stream(1_000, 20);
    }

    /// Stamps a few hundred microseconds apart, as 5,000 gateways' confirmations are: a
    /// stamp clamped to the millisecond must not anchor the next, or the fractions dropped
    /// each time hold the map's time still.
    #[test]
    fn stamps_less_than_a_millisecond_apart_keep_up_with_the_wall_clock() {
        steady_stream(250, 20);
        steady_stream(30, 5);
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
            // Twice the time since the anchor, and the millisecond the wall clock rounds off.
            let bound = ms(start) + step * 10 * u64::from(MAP_TIME_CATCH_UP) + 1;
            assert_eq!(ms(stamp), bound);
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
