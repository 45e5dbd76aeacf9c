//! The history of a real run: [`Record`]s numbered in the order they were recorded, timed
//! from the start of the run on the test's monotonic clock.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::world::{Event, Record};

struct Inner {
    seq: u64,
    records: Vec<Record>,
}

/// Shared by the poller, the operator and the driver. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    inner: Arc<Mutex<Inner>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            inner: Arc::new(Mutex::new(Inner {
                seq: 0,
                records: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Append `event`; its sequence number. The time is taken under the lock, so sequence
    /// order is time order.
    pub fn record(&self, event: Event) -> u64 {
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        let at = self.start.elapsed();
        inner.records.push(Record { seq, at, event });
        seq
    }

    pub fn history(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// The history from `seq` on (for a failure message: the records around a violation).
    pub fn around(&self, seq: u64, before: usize, after: usize) -> Vec<Record> {
        let inner = self.lock();
        let i = inner
            .records
            .iter()
            .position(|r| r.seq >= seq)
            .unwrap_or(inner.records.len());
        let from = i.saturating_sub(before);
        let to = (i + after + 1).min(inner.records.len());
        inner.records[from..to].to_vec()
    }
}
