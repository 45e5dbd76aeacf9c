//! What can go wrong, and the exit code each outcome gives.
//!
//! Scripts branch on the exit code, so the classes are few and stable: 1 the command was
//! refused (the answer will not change by retrying; `certs` refusals and file errors too),
//! 2 usage (clap's own), 3 no monitor could serve the request (retrying later may help),
//! 16 an ok-to-stop check answered no (the answer is printed as for yes).

/// The exit codes of `nvme-gw`.
pub mod exit {
    /// The command succeeded.
    pub const OK: u8 = 0;
    /// The command was refused: unknown gateway or group, group full, invalid id, nothing to
    /// delete, a disaster declaration not allowed now.
    pub const REFUSED: u8 = 1;
    /// The command line was wrong (clap prints the usage).
    pub const USAGE: u8 = 2;
    /// No monitor answered, or none could serve the request before the retries ran out.
    pub const NO_MONITOR: u8 = 3;
    /// `ok-to-stop` and `cluster ok-to-stop` answered no: stopping now would leave a group
    /// or the monitors' quorum short. EBUSY, the code of Ceph's ok-to-stop commands.
    pub const BUSY: u8 = 16;
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A refusal: by the monitor (its message, which names the reason) or by the CLI's own
    /// check of an argument before anything was sent.
    #[error("{0}")]
    Refused(String),
    /// Every attempt failed to reach a monitor that could serve the request.
    #[error(
        "no monitor could answer after {attempts} attempt(s) (tried {}); last error: {last}",
        tried.join(", ")
    )]
    NoMonitor {
        /// Every address tried, in the order first tried, leader redirects included.
        tried: Vec<String>,
        attempts: u32,
        last: String,
    },
    /// An ok-to-stop check answered no; the reason, in one line.
    #[error("{0}")]
    Busy(String),
    /// Printing the result failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// `certs init|issue` refused the arguments or could not read or write a file.
    #[error(transparent)]
    Certs(#[from] crate::certs::CertError),
    /// `--tls-*` incomplete, or a file that cannot be read or used.
    #[error(transparent)]
    Tls(#[from] gwmon_proto::tls::TlsError),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused(_) | CliError::Output(_) | CliError::Certs(_) | CliError::Tls(_) => {
                exit::REFUSED
            }
            CliError::NoMonitor { .. } => exit::NO_MONITOR,
            CliError::Busy(_) => exit::BUSY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_monitor_names_every_address_tried_in_one_line() {
        let e = CliError::NoMonitor {
            tried: vec!["a:1".into(), "b:2".into()],
            attempts: 3,
            last: "cannot connect to b:2: connection refused".into(),
        };
        let text = e.to_string();
        assert!(!text.contains('\n'));
        assert!(text.contains("tried a:1, b:2"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
        assert_eq!(e.exit_code(), exit::NO_MONITOR);
        assert_eq!(CliError::Refused("x".into()).exit_code(), exit::REFUSED);
    }
}
