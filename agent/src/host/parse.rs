//! Pure parsers of sysfs attribute contents: a file's text in, a typed value or a reason out.
//!
//! They take what `read_to_string` gave (trailing newline and all) and never panic: sysfs
//! formats change between kernels, and an attribute read in the middle of a state change
//! can be empty. Unknown words become the `Other` variant rather than an error, so a newer
//! kernel's state does not stop the agent from seeing the rest of the host.

use super::model::{Address, ArrayState, CtrlState, LegFlags, SyncAction, SyncProgress, Transport};

/// Why an attribute's content was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty")]
    Empty,
    #[error("{what} {text:?}")]
    Bad { what: &'static str, text: String },
}

fn bad(what: &'static str, text: &str) -> ParseError {
    ParseError::Bad {
        what,
        text: text.to_owned(),
    }
}

/// A controller's `fast_io_fail_tmo`: `off`, or whole seconds.
pub fn fast_io_fail(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A controller's `state`: `live`, `connecting`, `resetting`, `deleting`,
/// `deleting (no IO)`, `dead`, `new`.
pub fn ctrl_state(text: &str) -> CtrlState {
    match text.trim() {
        "live" => CtrlState::Live,
        "connecting" => CtrlState::Connecting,
        "resetting" => CtrlState::Resetting,
        "deleting" | "deleting (no IO)" => CtrlState::Deleting,
        "dead" => CtrlState::Dead,
        "new" => CtrlState::New,
        other => CtrlState::Other(other.to_owned()),
    }
}

/// A controller's `transport`.
pub fn transport(text: &str) -> Transport {
    match text.trim().to_ascii_lowercase().as_str() {
        "tcp" => Transport::Tcp,
        "rdma" => Transport::Rdma,
        "fc" => Transport::Fc,
        "loop" => Transport::Loop,
        other => Transport::Other(other.to_owned()),
    }
}

/// A controller's `address`: `traddr=10.0.0.1,trsvcid=4420`, possibly followed by
/// `src_addr=`/`host_traddr=`/`host_iface=` entries, which are ignored (the target is what
/// identifies a replica's connection). `loop` controllers have an empty address.
pub fn address(text: &str) -> Result<Address, ParseError> {
    let text = text.trim();
    let mut traddr = None;
    let mut trsvcid = None;
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| bad("address", text))?;
        match key.trim() {
            "traddr" => traddr = Some(value.trim().to_owned()),
            "trsvcid" => trsvcid = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    match (traddr, text.is_empty()) {
        (Some(traddr), _) => Ok(Address {
            traddr,
            trsvcid: trsvcid.unwrap_or_default(),
        }),
        (None, true) => Ok(Address {
            traddr: String::new(),
            trsvcid: String::new(),
        }),
        (None, false) => Err(bad("address without traddr", text)),
    }
}

/// The block device a namespace entry under a controller stands for: `nvme3n1` is itself;
/// with native multipath the entry is the path device `nvme3c5n1`, whose head (the block
/// device md and users see) is `nvme3n1`. `None` for entries that are not namespaces
/// (`power`, `device`, `hwmon0`, ...).
pub fn namespace_device(entry: &str) -> Option<String> {
    let rest = entry.strip_prefix("nvme")?;
    let (subsys, rest) = split_digits(rest)?;
    let rest = match rest.strip_prefix('c') {
        Some(r) => split_digits(r)?.1,
        None => rest,
    };
    let nsid = rest.strip_prefix('n')?;
    let (nsid, tail) = split_digits(nsid)?;
    tail.is_empty().then(|| format!("nvme{subsys}n{nsid}"))
}

/// `("12", rest)` for `"12rest"`, `None` when it does not start with a digit.
fn split_digits(s: &str) -> Option<(&str, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (end > 0).then(|| s.split_at(end))
}

/// Whether a directory entry of `/sys/class/nvme-fabrics/ctl/` is a controller (`nvme3`),
/// rather than something else the class lists.
pub fn is_controller_name(entry: &str) -> bool {
    entry
        .strip_prefix("nvme")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether a directory entry of `/sys/block/` is an md array (`md127`; `md_d0` partitions
/// of old kernels are not).
pub fn is_md_name(entry: &str) -> bool {
    entry
        .strip_prefix("md")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A namespace's `uuid`, lower case; the all-zero UUID a target sends when it has none is
/// no identity at all.
pub fn ns_uuid(text: &str) -> Option<String> {
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() || t.bytes().all(|b| b == b'0' || b == b'-') {
        None
    } else {
        Some(t)
    }
}

/// A decimal attribute (`raid_disks`, `degraded`, `nsid`).
pub fn number(what: &'static str, text: &str) -> Result<u32, ParseError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(ParseError::Empty);
    }
    t.parse().map_err(|_| bad(what, t))
}

/// md's `array_state`.
pub fn array_state(text: &str) -> ArrayState {
    match text.trim() {
        "clear" => ArrayState::Clear,
        "inactive" => ArrayState::Inactive,
        "suspended" => ArrayState::Suspended,
        "readonly" => ArrayState::Readonly,
        "read-auto" => ArrayState::ReadAuto,
        "clean" => ArrayState::Clean,
        "active" => ArrayState::Active,
        "write-pending" => ArrayState::WritePending,
        "active-idle" => ArrayState::ActiveIdle,
        "broken" => ArrayState::Broken,
        other => ArrayState::Other(other.to_owned()),
    }
}

/// md's `sync_action`.
pub fn sync_action(text: &str) -> SyncAction {
    match text.trim() {
        "idle" => SyncAction::Idle,
        "resync" => SyncAction::Resync,
        "recover" => SyncAction::Recover,
        "check" => SyncAction::Check,
        "repair" => SyncAction::Repair,
        "reshape" => SyncAction::Reshape,
        "frozen" => SyncAction::Frozen,
        other => SyncAction::Other(other.to_owned()),
    }
}

/// md's `sync_completed`: `done / total` in sectors while a sync runs, `none` when none
/// does, `delayed` when one is queued behind another array's sync on the same disks (no
/// progress to report yet, so `None` as well).
pub fn sync_completed(text: &str) -> Result<Option<SyncProgress>, ParseError> {
    let t = text.trim();
    match t {
        "" => Err(ParseError::Empty),
        "none" | "delayed" => Ok(None),
        _ => {
            let (done, total) = t.split_once('/').ok_or_else(|| bad("sync_completed", t))?;
            let done = done.trim().parse().map_err(|_| bad("sync_completed", t))?;
            let total = total.trim().parse().map_err(|_| bad("sync_completed", t))?;
            Ok(Some(SyncProgress { done, total }))
        }
    }
}

/// An md member's `state`: comma-separated flags, `in_sync,write_mostly`. Unknown flags
/// are ignored (kernels add them: `external_bbl`, `journal`, ...).
pub fn leg_flags(text: &str) -> LegFlags {
    let mut f = LegFlags::default();
    for word in text.trim().split(',').map(str::trim) {
        match word {
            "faulty" => f.faulty = true,
            "in_sync" => f.in_sync = true,
            "write_mostly" => f.write_mostly = true,
            "spare" => f.spare = true,
            "blocked" => f.blocked = true,
            "write_error" => f.write_error = true,
            "want_replacement" => f.want_replacement = true,
            "replacement" => f.replacement = true,
            "failfast" => f.failfast = true,
            _ => {}
        }
    }
    f
}

/// An md member's `slot`: its role number, or `none`.
pub fn slot(text: &str) -> Result<Option<u32>, ParseError> {
    match text.trim() {
        "" => Err(ParseError::Empty),
        "none" => Ok(None),
        t => t.parse().map(Some).map_err(|_| bad("slot", t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_io_fail_is_off_or_seconds() {
        assert_eq!(fast_io_fail("off\n"), None);
        assert_eq!(fast_io_fail("5\n"), Some(5));
        assert_eq!(fast_io_fail("-1"), None);
    }

    #[test]
    fn addresses_ignore_host_side_fields() {
        assert_eq!(
            address("traddr=10.0.0.1,trsvcid=4420,src_addr=10.0.0.9\n"),
            Ok(Address {
                traddr: "10.0.0.1".into(),
                trsvcid: "4420".into()
            })
        );
        assert_eq!(address("").map(|a| a.traddr), Ok(String::new()));
        assert!(address("trsvcid=4420").is_err());
        assert!(address("garbage").is_err());
    }

    #[test]
    fn namespace_entries_map_to_their_head_device() {
        assert_eq!(namespace_device("nvme3n1").as_deref(), Some("nvme3n1"));
        assert_eq!(namespace_device("nvme3c5n12").as_deref(), Some("nvme3n12"));
        for no in [
            "nvme3",
            "power",
            "nvme",
            "nvmeXn1",
            "nvme3n",
            "nvme3n1p1",
            "hwmon0",
        ] {
            assert_eq!(namespace_device(no), None, "{no}");
        }
    }

    #[test]
    fn sync_completed_forms() {
        assert_eq!(
            sync_completed("1024 / 4096\n"),
            Ok(Some(SyncProgress {
                done: 1024,
                total: 4096
            }))
        );
        assert_eq!(sync_completed("none\n"), Ok(None));
        assert_eq!(sync_completed("delayed"), Ok(None));
        assert_eq!(sync_completed(""), Err(ParseError::Empty));
        assert!(sync_completed("12 of 40").is_err());
        assert!(sync_completed("x / 40").is_err());
    }

    #[test]
    fn permille_is_clamped() {
        let p = |done, total| SyncProgress { done, total }.permille();
        assert_eq!(p(1, 4), 250);
        assert_eq!(p(5, 4), 1000);
        assert_eq!(p(0, 0), 1000);
        assert_eq!(p(u64::MAX, u64::MAX), 1000);
    }

    #[test]
    fn leg_flags_and_slots() {
        let f = leg_flags("faulty,write_mostly,failfast\n");
        assert!(f.faulty && f.write_mostly && f.failfast && !f.in_sync);
        assert_eq!(leg_flags(""), LegFlags::default());
        assert!(leg_flags("in_sync,external_bbl").in_sync);
        assert_eq!(slot("none\n"), Ok(None));
        assert_eq!(slot("1"), Ok(Some(1)));
        assert!(slot("-1").is_err());
    }

    #[test]
    fn states_keep_unknown_words() {
        assert_eq!(ctrl_state("deleting (no IO)\n"), CtrlState::Deleting);
        assert_eq!(ctrl_state("frozen"), CtrlState::Other("frozen".into()));
        assert_eq!(array_state("read-auto"), ArrayState::ReadAuto);
        assert_eq!(sync_action("recover\n"), SyncAction::Recover);
        assert_eq!(transport("TCP"), Transport::Tcp);
        assert_eq!(ns_uuid("00000000-0000-0000-0000-000000000000"), None);
        assert_eq!(ns_uuid("ABCD\n").as_deref(), Some("abcd"));
    }

    #[test]
    fn names() {
        assert!(is_controller_name("nvme12"));
        assert!(!is_controller_name("nvme"));
        assert!(!is_controller_name("nvme-fabrics"));
        assert!(is_md_name("md127"));
        assert!(!is_md_name("md_d0"));
        assert!(!is_md_name("md"));
    }
}
