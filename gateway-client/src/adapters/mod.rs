//! Target adapters: `AnaHandler`s for the targets gwmon drives.
//!
//! * [`file`]: a JSON file, for demos and tests.
//! * [`nvmet`]: the Linux kernel target through configfs.
//! * [`spdk`]: SPDK through its JSON-RPC unix socket.

pub mod file;
pub mod nvmet;
pub mod spdk;
