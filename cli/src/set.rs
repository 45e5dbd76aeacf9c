//! `nvme-gw set VAR VALUE`, Ceph's command for the monitor's settings of the gateways. Its
//! one setting, `beacon-diff`, is how gwmon always works: a beacon whose content did not
//! change is never committed. No monitor is contacted.

use std::io::Write;

use crate::args::{Format, SetVar};
use crate::error::CliError;
use crate::view::print;
use crate::view::set::SetOut;

pub fn run(var: SetVar, value: &str, format: Format, out: &mut dyn Write) -> Result<(), CliError> {
    let SetVar::BeaconDiff = var;
    let on = parse_bool(value).ok_or_else(|| {
        CliError::Refused(format!(
            "invalid value {value:?} for beacon-diff: true or false (on/off, yes/no, 1/0)"
        ))
    })?;
    if !on {
        return Err(CliError::Refused(
            "beacon-diff cannot be turned off in gwmon: a beacon is committed only when what \
             it reports changed, and gateways have no other mode"
                .to_owned(),
        ));
    }
    let view = SetOut {
        var: "beacon-diff",
        value: true,
        changed: false,
    };
    Ok(print(out, &view, format)?)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Some(true),
        "false" | "off" | "no" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(value: &str) -> Result<String, CliError> {
        let mut out = Vec::new();
        run(SetVar::BeaconDiff, value, Format::Json, &mut out)?;
        Ok(String::from_utf8(out).unwrap_or_default())
    }

    #[test]
    fn beacon_diff_on_is_accepted_and_changes_nothing() {
        for v in ["true", "on", "YES", "1"] {
            let json: serde_json::Value =
                serde_json::from_str(&set(v).unwrap_or_default()).unwrap_or_default();
            assert_eq!(
                json,
                serde_json::json!({"var": "beacon-diff", "value": true, "changed": false}),
                "{v}"
            );
        }
    }

    #[test]
    fn beacon_diff_off_and_nonsense_are_refused_in_one_line() {
        for (v, says) in [
            ("false", "cannot be turned off"),
            ("maybe", "invalid value"),
        ] {
            match set(v) {
                Err(CliError::Refused(m)) => {
                    assert!(m.contains(says) && !m.contains('\n'), "{v}: {m}")
                }
                other => panic!("{v}: {other:?}"),
            }
        }
    }
}
