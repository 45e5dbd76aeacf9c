//! `config show` and `config set`: the map's tunables, replicated with the map.

use std::collections::BTreeMap;

use gwmon_proto::v1;
use serde::Serialize;

use super::View;
use crate::table::Table;

/// The settings `config set` takes, in the order they are shown. Names are the proto's
/// (and the README's) so one name works everywhere.
pub const SETTINGS: [&str; 11] = [
    "max_gateways_per_group",
    "beacon_grace_ms",
    "fence_timeout_ms",
    "failback_prepare_ms",
    "failback_delay_ms",
    "skip_failover_redeploy_ms",
    "skip_failover_admin_ms",
    "blocklist_expiry_ms",
    "delete_grace_ms",
    "max_groups",
    "max_gateways",
];

fn values(s: &v1::MapSettings) -> [u64; 11] {
    [
        u64::from(s.max_gateways_per_group),
        s.beacon_grace_ms,
        s.fence_timeout_ms,
        s.failback_prepare_ms,
        s.failback_delay_ms,
        s.skip_failover_redeploy_ms,
        s.skip_failover_admin_ms,
        s.blocklist_expiry_ms,
        s.delete_grace_ms,
        u64::from(s.max_groups),
        u64::from(s.max_gateways),
    ]
}

/// Parses `NAME=VALUE` pairs into an update; the error names the bad pair.
pub fn parse_update(pairs: &[String]) -> Result<v1::MapSettingsUpdate, String> {
    let mut u = v1::MapSettingsUpdate::default();
    if pairs.is_empty() {
        return Err("config set needs at least one NAME=VALUE".to_owned());
    }
    for pair in pairs {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not NAME=VALUE"))?;
        let number: u64 = value.trim().parse().map_err(|_| {
            if name.trim().ends_with("_ms") {
                format!("{name}: {value:?} is not a whole number of milliseconds")
            } else {
                format!("{name}: {value:?} is not a whole number")
            }
        })?;
        let count = || u32::try_from(number).map_err(|_| format!("{name}: {number} is too large"));
        let slot = match name.trim() {
            "max_gateways_per_group" => {
                u.max_gateways_per_group = Some(count()?);
                continue;
            }
            "max_groups" => {
                u.max_groups = Some(count()?);
                continue;
            }
            "max_gateways" => {
                u.max_gateways = Some(count()?);
                continue;
            }
            "beacon_grace_ms" => &mut u.beacon_grace_ms,
            "fence_timeout_ms" => &mut u.fence_timeout_ms,
            "failback_prepare_ms" => &mut u.failback_prepare_ms,
            "failback_delay_ms" => &mut u.failback_delay_ms,
            "skip_failover_redeploy_ms" => &mut u.skip_failover_redeploy_ms,
            "skip_failover_admin_ms" => &mut u.skip_failover_admin_ms,
            "blocklist_expiry_ms" => &mut u.blocklist_expiry_ms,
            "delete_grace_ms" => &mut u.delete_grace_ms,
            other => {
                return Err(format!(
                    "unknown setting {other:?}; the settings are {}",
                    SETTINGS.join(", ")
                ))
            }
        };
        *slot = Some(number);
    }
    Ok(u)
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigOut {
    /// The map epoch the settings were read from (`show`) or committed at (`set`).
    pub epoch: u64,
    /// Every setting and its value.
    pub settings: BTreeMap<&'static str, u64>,
    /// The shipped defaults (`show` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defaults: Option<BTreeMap<&'static str, u64>>,
    /// The range each setting accepts (`show` only, from monitors that send it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranges: Option<BTreeMap<&'static str, Range>>,
}

/// The lowest and highest value a setting accepts, as the monitors check them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

fn named(s: &v1::MapSettings) -> BTreeMap<&'static str, u64> {
    SETTINGS.into_iter().zip(values(s)).collect()
}

impl ConfigOut {
    pub fn from_get(resp: v1::GetConfigResponse) -> Self {
        let ranges = resp.min.as_ref().zip(resp.max.as_ref()).map(|(lo, hi)| {
            SETTINGS
                .into_iter()
                .zip(values(lo).into_iter().zip(values(hi)))
                .map(|(name, (min, max))| (name, Range { min, max }))
                .collect()
        });
        ConfigOut {
            epoch: resp.map_epoch,
            settings: named(&resp.settings.unwrap_or_default()),
            defaults: resp.defaults.as_ref().map(named),
            ranges,
        }
    }

    pub fn from_set(resp: v1::SetConfigResponse) -> Self {
        ConfigOut {
            epoch: resp.map_epoch,
            settings: named(&resp.settings.unwrap_or_default()),
            defaults: None,
            ranges: None,
        }
    }
}

impl View for ConfigOut {
    fn plain(&self) -> String {
        let mut t = Table::new(&["SETTING", "VALUE", "DEFAULT", "RANGE"]);
        for name in SETTINGS {
            let value = self.settings.get(name).copied().unwrap_or_default();
            let default = self
                .defaults
                .as_ref()
                .and_then(|d| d.get(name))
                .map_or_else(String::new, |d| {
                    if *d == value {
                        d.to_string()
                    } else {
                        format!("{d} (changed)")
                    }
                });
            let range = self
                .ranges
                .as_ref()
                .and_then(|r| r.get(name))
                .map_or_else(String::new, |r| format!("{} to {}", r.min, r.max));
            t.row(vec![name.to_owned(), value.to_string(), default, range]);
        }
        format!("map epoch {}\n{}", self.epoch, t.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_become_an_update_and_bad_ones_are_named() {
        let u = parse_update(&[
            "beacon_grace_ms=1000".into(),
            "max_gateways_per_group=8".into(),
        ])
        .expect("valid");
        assert_eq!(u.beacon_grace_ms, Some(1000));
        assert_eq!(u.max_gateways_per_group, Some(8));
        assert_eq!(u.fence_timeout_ms, None);
        let e = parse_update(&["grace=1".into()]).expect_err("unknown");
        assert!(e.contains("unknown setting \"grace\"") && e.contains("beacon_grace_ms"));
        let e = parse_update(&["beacon_grace_ms=1s".into()]).expect_err("not a number");
        assert!(e.contains("beacon_grace_ms"), "{e}");
        assert!(parse_update(&["beacon_grace_ms".into()]).is_err());
        assert!(parse_update(&[]).is_err());
        assert!(parse_update(&["max_gateways_per_group=99999999999".into()]).is_err());
    }
}
