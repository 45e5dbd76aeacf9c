//! nvme-gw: the admin CLI of gwmon.
//!
//! * [`args`]: the command line (clap derive), every flag documented.
//! * [`commands`]: checking arguments, making the calls, printing the result; one module
//!   per command group.
//! * [`client`]: the admin client: leader following and bounded retries.
//! * [`view`]: the output types, their documented JSON and their tables.
//! * [`table`]: aligned plain-text tables.
//! * [`time`]: timestamps for people.
//! * [`certs`]: `certs init|issue`, the mutual-TLS certificates, made offline.
//! * [`stop`]: `ok-to-stop` and `cluster ok-to-stop`, asked before upgrades and maintenance.
//! * [`maintenance`]: `maintenance enter|exit`, a gateway's ANA groups moved away and back.
//! * [`status`]: `status`, the whole system in one line.
//! * [`set`]: `set beacon-diff`, Ceph's setting, accepted with its meaning in gwmon.
//! * [`error`]: the error classes and their exit codes.

pub mod args;
pub mod certs;
pub mod client;
pub mod commands;
pub mod error;
pub mod maintenance;
pub mod set;
pub mod status;
pub mod stop;
pub mod table;
pub mod time;
pub mod view;
