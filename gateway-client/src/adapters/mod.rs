//! Target adapters: `AnaHandler`s for the targets gwmon drives.
//!
//! * [`file`]: a JSON file, for demos and tests.
//! * [`nvmet`]: the Linux kernel target through configfs.
//! * [`spdk`]: SPDK through its JSON-RPC unix socket.

pub mod file;
pub mod nvmet;
pub mod spdk;

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Logs each distinct warning once: a target scan runs with every beacon, and an unsupported
/// port, subsystem or listener would otherwise fill the log with the same line every few
/// seconds.
#[derive(Debug, Default)]
pub(crate) struct WarnOnce(Mutex<BTreeSet<String>>);

impl WarnOnce {
    /// Distinct messages remembered; beyond this the memory starts over (and repeats).
    const MAX: usize = 1024;

    pub(crate) fn warn(&self, message: String) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&message) {
            return;
        }
        if seen.len() >= Self::MAX {
            seen.clear();
        }
        tracing::warn!("{message}");
        seen.insert(message);
    }
}
