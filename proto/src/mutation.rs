//! Known bugs, re-introduced on purpose so the simulation can show that it finds them.
//!
//! Each [`Mutation`] undoes one safety mechanism. They exist only in debug builds with the
//! `mutations` feature (which only the simulation enables), and even there each is off
//! unless a test turns it on for its own thread: the simulation runs a whole cluster on one
//! thread, so one test's mutation never leaks into another's. In any other build
//! [`active`] is a constant `false` the compiler removes.

/// One re-introduced bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mutation {
    /// The leader grants gateway leases without checking that a quorum heard from it
    /// recently: a leader cut off from its followers keeps its gateways serving.
    AckWithoutQuorum,
    /// A gateway serves a group it was given before the old owner's fence completed.
    PromoteBeforeFence,
    /// A serving order whose target call failed counts as not having changed the target, so
    /// when the lease runs out the gateway does not order the demotion.
    SkipDemotionAfterFailedApply,
    /// Timeouts decided from what a monitor observed in an earlier term: a re-elected
    /// leader keeps the timers it had when it last led (restarting them neither for the new
    /// term nor for the pause in its ticks), and the state machine applies a timeout
    /// decided in one term but appended in another.
    StaleTermTimeout,
    /// A compute node's question of which replicas to build its array from is answered from
    /// the asked monitor's own copy of the registry, which may lag the leader's.
    StaleConnectionRead,
    /// A monitor whose quorum contact has lapsed still sends its map to a gateway that
    /// opens a session, and the gateway applies it under the lease another session's
    /// monitor granted, before the new session acks.
    StaleSliceUnderLease,
    /// Namespace balancing tells the gateway that serves a namespace's new ANA group to
    /// serve it at once, without waiting for the old one to let go (make before break).
    MoveBeforeRelease,
}

impl Mutation {
    pub const ALL: [Mutation; 7] = [
        Mutation::AckWithoutQuorum,
        Mutation::PromoteBeforeFence,
        Mutation::SkipDemotionAfterFailedApply,
        Mutation::StaleTermTimeout,
        Mutation::StaleConnectionRead,
        Mutation::StaleSliceUnderLease,
        Mutation::MoveBeforeRelease,
    ];

    /// The name used on command lines.
    pub fn name(self) -> &'static str {
        match self {
            Mutation::AckWithoutQuorum => "ack-without-quorum",
            Mutation::PromoteBeforeFence => "promote-before-fence",
            Mutation::SkipDemotionAfterFailedApply => "skip-demotion-after-failed-apply",
            Mutation::StaleTermTimeout => "stale-term-timeout",
            Mutation::StaleConnectionRead => "stale-connection-read",
            Mutation::StaleSliceUnderLease => "stale-slice-under-lease",
            Mutation::MoveBeforeRelease => "move-before-release",
        }
    }

    pub fn from_name(s: &str) -> Option<Mutation> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }
}

#[cfg(all(feature = "mutations", debug_assertions))]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<Mutation>> = const { std::cell::Cell::new(None) };
}

/// Whether `m` is switched on for this thread.
#[inline]
pub fn active(m: Mutation) -> bool {
    #[cfg(all(feature = "mutations", debug_assertions))]
    {
        ACTIVE.with(|a| a.get() == Some(m))
    }
    #[cfg(not(all(feature = "mutations", debug_assertions)))]
    {
        let _ = m;
        false
    }
}

/// Switch `m` on (or every mutation off) for this thread. Returns false, doing nothing, in
/// a build without mutations.
pub fn set(m: Option<Mutation>) -> bool {
    #[cfg(all(feature = "mutations", debug_assertions))]
    {
        ACTIVE.with(|a| a.set(m));
        true
    }
    #[cfg(not(all(feature = "mutations", debug_assertions)))]
    {
        let _ = m;
        false
    }
}
