//! What the CLI prints: one output type per command, built from the wire types by explicit
//! conversions (wire, persisted and CLI types are kept apart, so the proto can evolve
//! without changing the JSON scripts parse).
//!
//! Each type serializes to the documented JSON (README.md, "## CLI") and renders a plain
//! form for people. Where Ceph has the command, the JSON keys are Ceph's, spelling and
//! spaces included ("num gws", "Created Gateways:"), so scripts written for `ceph nvme-gw`
//! keep working.
//!
//! * [`group`]: `show` and `show-all`.
//! * [`listeners`]: the `listeners` command.
//! * [`blocklist`]: `blocklist ls`.
//! * [`health`]: the `health` command.
//! * [`events`]: `events`, one line per event.
//! * [`cluster`]: `cluster status|add|remove`.
//! * [`config`]: `config show|set`, the map's tunables.
//! * [`volume`]: `volume create|show|list|replace` and `host list`: replicated volumes.
//! * [`write`]: the result of every map change.
//! * [`certs`]: `certs init|issue`, the certificate files written.

pub mod blocklist;
pub mod certs;
pub mod cluster;
pub mod config;
pub mod events;
pub mod group;
pub mod health;
pub mod listeners;
pub mod set;
pub mod summary;
pub mod volume;
pub mod write;

use std::io::Write;

use serde::Serialize;

use crate::args::Format;

/// An output: JSON through serde, plain through [`View::plain`].
pub trait View: Serialize {
    /// The plain form, ending in a newline.
    fn plain(&self) -> String;
}

/// Print `view` in `format` to `out`.
pub fn print<V: View>(out: &mut dyn Write, view: &V, format: Format) -> std::io::Result<()> {
    match format {
        Format::Json => {
            let text = serde_json::to_string(view).map_err(std::io::Error::other)?;
            writeln!(out, "{text}")?;
        }
        Format::JsonPretty => {
            let text = serde_json::to_string_pretty(view).map_err(std::io::Error::other)?;
            writeln!(out, "{text}")?;
        }
        Format::Plain => out.write_all(view.plain().as_bytes())?,
    }
    out.flush()
}

/// A group as people and monitor messages name it: `pool/group`, with Ceph's default
/// (empty) group spelled out, since `rbd/` reads like a typo.
pub fn group_label(pool: &str, group: &str) -> String {
    if group.is_empty() {
        format!("{pool}/(default group)")
    } else {
        format!("{pool}/{group}")
    }
}

/// A blank cell would shift a reader's eye to the next column: show a dash instead.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::write::{Change, WriteOut};

    /// Ceph's two JSON formats: `json` on one line, `json-pretty` indented, the same value.
    #[test]
    fn json_is_one_line_and_json_pretty_is_indented() {
        let view = WriteOut::new(Change::Enable, "rbd", "grp1", 7);
        let text = |format| {
            let mut out = Vec::new();
            print(&mut out, &view, format).expect("print");
            String::from_utf8(out).expect("utf-8")
        };
        let (one, pretty) = (text(Format::Json), text(Format::JsonPretty));
        assert_eq!(one.lines().count(), 1, "{one}");
        assert!(pretty.lines().count() > 3, "{pretty}");
        assert!(pretty.contains("\n  \"command\": \"enable\""), "{pretty}");
        let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("json");
        assert_eq!(parse(&one), parse(&pretty));
    }
}
