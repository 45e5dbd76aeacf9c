//! Flap damping: a gateway that keeps going down stops getting its ANA group back.
//!
//! Routers damp a flapping route the same way (RFC 2439): every down adds a penalty that
//! halves every [`HALF_LIFE_MS`]; a gateway whose penalty reached [`SUPPRESS`] is damped
//! until it has decayed to [`REUSE`]. A damped gateway keeps serving a group nobody else
//! can serve, but it gets no fast-reboot hold (its group goes to a healthy gateway at once),
//! no failback, and is a failover target only when no undamped gateway can serve. The
//! penalty is capped at [`CEILING`], so damping ends at most [`max_damped_ms`] after the
//! last down. Other gateways of the group are never held because of it.
//!
//! Integer arithmetic only: every replica must compute the same map, and floating-point
//! functions such as `exp2` are not guaranteed to round alike everywhere.

use serde::{Deserialize, Serialize};

use super::time::Timestamp;

/// Penalty one down adds, in thousandths.
pub const PER_DOWN: u32 = 1_000;
/// A penalty at or above this damps the gateway: two downs within one half-life.
pub const SUPPRESS: u32 = 1_500;
/// A damped gateway is undamped once its penalty has decayed to this.
pub const REUSE: u32 = 750;
/// The largest penalty: at most about 51 s of damping after the last down.
pub const CEILING: u32 = 8_000;
/// The time in which a penalty halves. A crash loop (a service manager restarting the
/// gateway every few seconds) is damped from its second down; a gateway restarted twice a
/// minute apart (a redeploy, an upgrade) is not.
pub const HALF_LIFE_MS: u64 = 15_000;

/// A gateway's damping record, stored in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damping {
    /// The penalty as of `at`, in thousandths of a down.
    pub penalty: u32,
    /// The time of the last down.
    pub at: Timestamp,
    /// Whether the penalty reached [`SUPPRESS`] since it was last below [`REUSE`].
    pub suppressed: bool,
}

impl Damping {
    /// The penalty at `now`: halved for every whole half-life since `at`, and linearly
    /// between two halvings (within 6% of the exponential, and the same on every replica).
    pub fn penalty_at(&self, now: Timestamp) -> u32 {
        let elapsed = now.as_millis().saturating_sub(self.at.as_millis());
        let halvings = elapsed / HALF_LIFE_MS;
        if halvings >= 32 {
            return 0;
        }
        let p = u64::from(self.penalty >> halvings);
        let into = elapsed % HALF_LIFE_MS;
        let decayed = p - p * into / (2 * HALF_LIFE_MS);
        u32::try_from(decayed).unwrap_or(u32::MAX)
    }

    /// Whether the gateway is damped at `now`.
    pub fn damped(&self, now: Timestamp) -> bool {
        self.suppressed && self.penalty_at(now) > REUSE
    }

    /// The record after a down at `now`.
    pub fn down(previous: Option<Damping>, now: Timestamp) -> Damping {
        let (penalty, suppressed) = match previous {
            Some(d) => (d.penalty_at(now), d.damped(now)),
            None => (0, false),
        };
        let penalty = penalty.saturating_add(PER_DOWN).min(CEILING);
        Damping {
            penalty,
            at: now,
            suppressed: suppressed || penalty >= SUPPRESS,
        }
    }

    /// When the damping ends, if the gateway is damped at `now`.
    pub fn until(&self, now: Timestamp) -> Option<Timestamp> {
        if !self.damped(now) {
            return None;
        }
        // The decay is monotonic: search the millisecond it reaches REUSE.
        let (mut lo, mut hi) = (
            now.as_millis(),
            self.at.as_millis().saturating_add(max_damped_ms()),
        );
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.penalty_at(Timestamp::from_millis(mid)) > REUSE {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Some(Timestamp::from_millis(lo))
    }
}

/// The longest a gateway stays damped after its last down (the ceiling decaying to reuse).
pub const fn max_damped_ms() -> u64 {
    // CEILING / 2^3 = 1000 > REUSE, / 2^4 = 500 < REUSE: past three half-lives and within
    // the fourth.
    4 * HALF_LIFE_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn one_down_does_not_damp_two_close_ones_do() {
        let one = Damping::down(None, at(0));
        assert!(!one.damped(at(0)));
        let two = Damping::down(Some(one), at(3_000));
        assert!(two.damped(at(3_000)));
        // Far apart, the first has decayed: no damping.
        let apart = Damping::down(Some(one), at(5 * HALF_LIFE_MS));
        assert!(!apart.damped(at(5 * HALF_LIFE_MS)));
    }

    #[test]
    fn the_penalty_halves_every_half_life_and_damping_ends_at_reuse() {
        let d = Damping {
            penalty: 2_000,
            at: at(0),
            suppressed: true,
        };
        assert_eq!(d.penalty_at(at(HALF_LIFE_MS)), 1_000);
        assert_eq!(d.penalty_at(at(2 * HALF_LIFE_MS)), 500);
        assert_eq!(d.penalty_at(at(HALF_LIFE_MS / 2)), 1_500);
        let until = d.until(at(0)).expect("damped");
        assert!(d.penalty_at(until) <= REUSE);
        assert!(d.penalty_at(until.before(1)) > REUSE);
        assert!(!d.damped(until));
    }

    #[test]
    fn a_gateway_flapping_for_ever_is_damped_for_a_bounded_time() {
        let mut d = None;
        for i in 0..1_000u64 {
            d = Some(Damping::down(d, at(i * 3_000)));
        }
        let d = d.expect("record");
        assert_eq!(d.penalty, CEILING);
        let until = d.until(d.at).expect("damped");
        assert!(until.as_millis() - d.at.as_millis() <= max_damped_ms());
        assert!(until.as_millis() - d.at.as_millis() > 3 * HALF_LIFE_MS);
    }
}
