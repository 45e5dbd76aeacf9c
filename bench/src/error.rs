//! The bench's one error type. Each failure prints as one line that says what was being
//! done and why it failed.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {code:?}: {message}")]
    Rpc {
        what: String,
        code: tonic::Code,
        message: String,
    },
    #[error("{what}: {source}")]
    Connect {
        what: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("timed out after {:.1} s waiting for {what}", .after.as_secs_f64())]
    Timeout { what: String, after: Duration },
    #[error("{0}")]
    Failed(String),
}

impl BenchError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> BenchError {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }

    pub fn rpc(what: impl Into<String>, status: &tonic::Status) -> BenchError {
        BenchError::Rpc {
            what: what.into(),
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    pub fn connect(what: impl Into<String>, source: tonic::transport::Error) -> BenchError {
        BenchError::Connect {
            what: what.into(),
            source,
        }
    }

    pub fn timeout(what: impl Into<String>, after: Duration) -> BenchError {
        BenchError::Timeout {
            what: what.into(),
            after,
        }
    }

    pub fn failed(msg: impl Into<String>) -> BenchError {
        BenchError::Failed(msg.into())
    }
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;
