//! `set VAR VALUE`: the setting and its value after the command.

use serde::Serialize;

use super::View;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetOut {
    /// The setting, as typed (`beacon-diff`).
    pub var: &'static str,
    /// Its value now.
    pub value: bool,
    /// Whether the command changed it.
    pub changed: bool,
}

impl View for SetOut {
    fn plain(&self) -> String {
        format!(
            "{} is always on in gwmon: a beacon is committed only when what it reports \
             changed; nothing to change\n",
            self.var
        )
    }
}
