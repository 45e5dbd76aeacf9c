//! Which groups of the map changed, for the gateway sessions that wait on their own group.
//!
//! A session used to wake on every applied entry, read the map and rebuild its slice only
//! to find it unchanged: with thousands of sessions and a change in every group that is
//! sessions x entries wakeups. The state machine now says which group an applied change
//! touched (the command's group), and a session waits on its group's signal, plus the
//! signal for changes that may touch any group (timer ticks, tunables, a snapshot install).
//! A missed signal would cost at most one beacon interval: a session also pushes its slice
//! after every acked beacon.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use gwmon_proto::domain::GroupKey;
use tokio::sync::watch;

/// Shared by the state machine (which signals) and every map reader (which subscribe).
#[derive(Debug, Clone)]
pub struct Signals {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    groups: Mutex<HashMap<GroupKey, watch::Sender<u64>>>,
    all: watch::Sender<u64>,
}

/// What one batch of applied entries changed.
#[derive(Debug, Default)]
pub struct Touched {
    /// A set: a batch of a few hundred commands names a group many times.
    groups: HashSet<GroupKey>,
    all: bool,
}

impl Touched {
    /// A change of `key`'s group; `None` for a change that may touch any group.
    pub fn add(&mut self, key: Option<&GroupKey>) {
        match key {
            Some(k) if !self.groups.contains(k) => {
                self.groups.insert(k.clone());
            }
            Some(_) => {}
            None => self.all = true,
        }
    }

    pub fn everything(&mut self) {
        self.all = true;
    }
}

impl Signals {
    pub fn new(index: u64) -> Self {
        let (all, _) = watch::channel(index);
        Signals {
            inner: Arc::new(Inner {
                groups: Mutex::new(HashMap::new()),
                all,
            }),
        }
    }

    /// Wakes the waiters of what `touched` names, with the last applied `index`.
    pub fn signal(&self, touched: &Touched, index: u64) {
        if touched.all {
            self.inner.all.send_replace(index);
            return;
        }
        if touched.groups.is_empty() {
            return;
        }
        let groups = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for k in &touched.groups {
            if let Some(tx) = groups.get(k) {
                tx.send_replace(index);
            }
        }
    }

    /// A waiter for changes of `key`'s group (and of everything).
    pub fn watch(&self, key: &GroupKey) -> GroupChanges {
        let mut groups = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let group = groups
            .entry(key.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        let mut all = self.inner.all.subscribe();
        all.mark_unchanged();
        GroupChanges { group, all }
    }
}

/// Waits for a change of one group.
#[derive(Debug)]
pub struct GroupChanges {
    group: watch::Receiver<u64>,
    all: watch::Receiver<u64>,
}

impl GroupChanges {
    /// Resolves at the next change of the group or of everything after the last one seen.
    /// Never errors: the signals live as long as any reader.
    pub async fn changed(&mut self) {
        tokio::select! {
            r = self.group.changed() => { let _ = r; }
            r = self.all.changed() => { let _ = r; }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(g: &str) -> GroupKey {
        GroupKey::new("p".parse().expect("pool"), g.parse().expect("group"))
    }

    async fn woke(w: &mut GroupChanges) -> bool {
        tokio::time::timeout(Duration::from_millis(50), w.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_waiter_wakes_for_its_group_and_for_everything_only() {
        let s = Signals::new(0);
        let mut a = s.watch(&key("a"));
        let mut b = s.watch(&key("b"));
        let mut t = Touched::default();
        t.add(Some(&key("a")));
        s.signal(&t, 1);
        assert!(woke(&mut a).await);
        assert!(
            !woke(&mut b).await,
            "another group's change does not wake b"
        );
        let mut t = Touched::default();
        t.add(None);
        s.signal(&t, 2);
        assert!(woke(&mut a).await && woke(&mut b).await);
        assert!(!woke(&mut a).await, "seen once");
    }
}
