//! The gwmon monitor.
//!
//! * [`map`]: the pure gateway-map engine (no I/O, no clock).
//! * [`codec`]: versioned binary encodings of everything the monitor persists.

pub mod codec;
pub mod map;
