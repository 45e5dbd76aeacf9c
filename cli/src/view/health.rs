//! `health`: the failing health checks, most severe first.

use gwmon_proto::v1;
use serde::Serialize;

use super::View;
use crate::table::Table;

/// Ceph's words for the overall status and each check's severity, so alerting written for
/// `ceph health` reads it unchanged.
pub const OK: &str = "HEALTH_OK";
pub const WARN: &str = "HEALTH_WARN";
pub const ERR: &str = "HEALTH_ERR";

#[derive(Debug, Clone, Serialize)]
pub struct HealthOut {
    /// `HEALTH_OK`, `HEALTH_WARN` or `HEALTH_ERR`: the most severe check's.
    pub status: String,
    pub checks: Vec<CheckOut>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckOut {
    /// Stable and machine-readable (`NVMEOF_GATEWAY_DOWN`, `NVMEOF_SINGLE_GATEWAY`, ...):
    /// branch on this, not on the message.
    pub code: String,
    /// `HEALTH_WARN` or `HEALTH_ERR`.
    pub severity: String,
    pub message: String,
}

impl HealthOut {
    pub fn from_wire(resp: v1::HealthResponse) -> Self {
        let checks: Vec<CheckOut> = resp
            .checks
            .into_iter()
            .map(|c| CheckOut {
                severity: match v1::Severity::try_from(c.severity) {
                    Ok(v1::Severity::Error) => ERR,
                    // Unspecified or a severity newer than this CLI: a warning, not silence.
                    _ => WARN,
                }
                .to_owned(),
                code: c.code,
                message: c.message,
            })
            .collect();
        let status = if checks.iter().any(|c| c.severity == ERR) {
            ERR
        } else if checks.is_empty() {
            OK
        } else {
            WARN
        };
        HealthOut {
            status: status.to_owned(),
            checks,
        }
    }
}

impl View for HealthOut {
    fn plain(&self) -> String {
        if self.checks.is_empty() {
            return format!("{}\n", self.status);
        }
        let mut t = Table::new(&["SEVERITY", "CODE", "MESSAGE"]);
        for c in &self.checks {
            t.row(vec![c.severity.clone(), c.code.clone(), c.message.clone()]);
        }
        format!("{}\n{}", self.status, t.render())
    }
}
