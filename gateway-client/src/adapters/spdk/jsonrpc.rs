//! A JSON-RPC 2.0 client for SPDK's unix socket.
//!
//! SPDK frames nothing: a request and a response are each one JSON value on the stream, and a
//! large response (`nvmf_get_subsystems` on a big target) arrives over many reads. The
//! [`Framer`] finds where the value ends by tracking nesting and strings, in one pass over the
//! bytes as they arrive, and only the complete value is parsed.
//!
//! One connection is kept and reused, one request at a time (SPDK answers a connection's
//! requests in order, and the handler's calls are sequential anyway). When the kept
//! connection turns out to be dead before any byte of the answer came back (SPDK restarted),
//! the request is sent once more on a new connection: every method the adapter uses is
//! idempotent, so a repeat is harmless. Any other failure, and a timeout, drops the
//! connection, so that a late answer can never be taken for the answer to the next request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

/// The largest response accepted. `nvmf_get_subsystems` for 1024 subsystems with thousands of
/// namespaces is a few megabytes; the cap keeps a misbehaving peer from exhausting memory.
const MAX_RESPONSE: usize = 64 << 20;

/// How much to read at once.
const READ_CHUNK: usize = 64 << 10;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum RpcError {
    #[error("{socket}: {source}")]
    Io {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{socket}: no answer within {timeout:?}")]
    Timeout { socket: String, timeout: Duration },
    #[error("{socket}: not a valid JSON-RPC answer: {message}")]
    Protocol { socket: String, message: String },
    /// SPDK answered with a JSON-RPC error object.
    #[error("JSON-RPC error {code}: {message}")]
    Rpc { code: i64, message: String },
}

impl RpcError {
    /// Whether SPDK is reachable and answered: further calls may well succeed.
    pub(super) fn is_answer(&self) -> bool {
        matches!(self, RpcError::Rpc { .. })
    }
}

pub(super) struct RpcClient {
    socket: PathBuf,
    timeout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    conn: Option<Conn>,
    next_id: u64,
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    framer: Framer,
}

/// How one attempt on a connection ended, when it did not return an answer.
enum Failure {
    /// The connection was found dead before any byte of the answer arrived.
    Dead(std::io::Error),
    Other(RpcError),
}

impl RpcClient {
    pub(super) fn new(socket: PathBuf, timeout: Duration) -> Self {
        RpcClient {
            socket,
            timeout,
            state: Mutex::new(State::default()),
        }
    }

    pub(super) fn socket(&self) -> &Path {
        &self.socket
    }

    /// Call `method` and return its `result`.
    pub(super) async fn call(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, RpcError> {
        let mut state = self.state.lock().await;
        state.next_id = state.next_id.wrapping_add(1);
        let id = state.next_id;
        let mut request = serde_json::json!({ "jsonrpc": "2.0", "method": method, "id": id });
        if let Some(p) = params {
            request["params"] = p;
        }
        let mut bytes = request.to_string().into_bytes();
        bytes.push(b'\n');

        let outcome =
            tokio::time::timeout(self.timeout, self.exchange(&mut state.conn, &bytes, id)).await;
        match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if !e.is_answer() {
                    state.conn = None;
                }
                Err(e)
            }
            Err(_) => {
                state.conn = None;
                Err(RpcError::Timeout {
                    socket: self.socket_name(),
                    timeout: self.timeout,
                })
            }
        }
    }

    /// Send the request and read its answer, on the kept connection if there is one, with
    /// one retry on a fresh connection if the kept one is dead.
    async fn exchange(
        &self,
        conn: &mut Option<Conn>,
        request: &[u8],
        id: u64,
    ) -> Result<Value, RpcError> {
        if let Some(c) = conn.as_mut() {
            match self.attempt(c, request, id).await {
                Ok(v) => return Ok(v),
                Err(Failure::Other(e)) => return Err(e),
                Err(Failure::Dead(e)) => {
                    tracing::debug!(socket = %self.socket.display(), error = %e,
                        "SPDK connection was closed; reconnecting");
                    *conn = None;
                }
            }
        }
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| self.io(source))?;
        let c = conn.insert(Conn {
            stream,
            buf: Vec::new(),
            framer: Framer::default(),
        });
        match self.attempt(c, request, id).await {
            Ok(v) => Ok(v),
            Err(Failure::Dead(e)) => Err(self.io(e)),
            Err(Failure::Other(e)) => Err(e),
        }
    }

    async fn attempt(&self, c: &mut Conn, request: &[u8], id: u64) -> Result<Value, Failure> {
        if let Err(e) = c.stream.write_all(request).await {
            return Err(Failure::Dead(e));
        }
        let started = c.buf.len();
        let frame = loop {
            match c.framer.scan(&c.buf) {
                Ok(Some(end)) => break end,
                Ok(None) => {}
                Err(message) => return Err(Failure::Other(self.protocol(message))),
            }
            if c.buf.len() > MAX_RESPONSE {
                return Err(Failure::Other(
                    self.protocol(format!("the answer exceeds {MAX_RESPONSE} bytes")),
                ));
            }
            c.buf.reserve(READ_CHUNK);
            match c.stream.read_buf(&mut c.buf).await {
                Ok(0) if c.buf.len() == started => {
                    return Err(Failure::Dead(std::io::ErrorKind::UnexpectedEof.into()))
                }
                Ok(0) => {
                    return Err(Failure::Other(self.protocol(
                        "the connection closed in the middle of an answer".into(),
                    )))
                }
                Ok(_) => {}
                Err(e) if c.buf.len() == started && is_reset(&e) => return Err(Failure::Dead(e)),
                Err(e) => return Err(Failure::Other(self.io(e))),
            }
        };
        let parsed = serde_json::from_slice::<Response>(&c.buf[..frame]);
        c.buf.drain(..frame);
        let response = parsed.map_err(|e| Failure::Other(self.protocol(e.to_string())))?;
        response.into_result(id).map_err(|e| {
            Failure::Other(match e {
                Err(message) => self.protocol(message),
                Ok(rpc) => rpc,
            })
        })
    }

    fn socket_name(&self) -> String {
        self.socket.display().to_string()
    }

    fn io(&self, source: std::io::Error) -> RpcError {
        RpcError::Io {
            socket: self.socket_name(),
            source,
        }
    }

    fn protocol(&self, message: String) -> RpcError {
        RpcError::Protocol {
            socket: self.socket_name(),
            message,
        }
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe)
}

#[derive(Debug, Deserialize)]
struct Response {
    #[serde(default)]
    jsonrpc: Option<String>,
    #[serde(default)]
    id: Value,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<ErrorObject>,
}

#[derive(Debug, Deserialize)]
struct ErrorObject {
    code: i64,
    #[serde(default)]
    message: String,
}

impl Response {
    /// The result, or `Err(Ok(rpc error))` for SPDK's error, or `Err(Err(why))` for an
    /// answer that is not JSON-RPC 2.0 or not the answer to request `id`.
    fn into_result(self, id: u64) -> Result<Value, Result<RpcError, String>> {
        if self.jsonrpc.as_deref() != Some("2.0") {
            return Err(Err(format!(
                "\"jsonrpc\" is {:?}, not \"2.0\"",
                self.jsonrpc
            )));
        }
        // An error about a request the server could not read carries a null id.
        let id_ok = self.id == id || (self.id.is_null() && self.error.is_some());
        if !id_ok {
            return Err(Err(format!("answers request {}, not {id}", self.id)));
        }
        match (self.result, self.error) {
            (_, Some(e)) => Err(Ok(RpcError::Rpc {
                code: e.code,
                message: e.message,
            })),
            (Some(v), None) => Ok(v),
            (None, None) => Err(Err("neither \"result\" nor \"error\"".into())),
        }
    }
}

/// Finds the end of one JSON object or array in a byte stream, resuming where it left off.
#[derive(Debug, Default)]
struct Framer {
    /// How far into the buffer the scan has got.
    pos: usize,
    depth: usize,
    started: bool,
    in_string: bool,
    escaped: bool,
}

impl Framer {
    /// Scan `buf` from where the last call stopped. `Ok(Some(end))` when the value ends at
    /// `end` (exclusive); the framer then starts afresh, so the caller must remove
    /// `buf[..end]`. `Ok(None)` when more bytes are needed.
    fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, String> {
        while let Some(&b) = buf.get(self.pos) {
            self.pos += 1;
            if !self.started {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    b'{' | b'[' => {
                        self.started = true;
                        self.depth = 1;
                        continue;
                    }
                    other => {
                        return Err(format!(
                            "an answer must be a JSON object; it starts with {:?}",
                            char::from(other)
                        ))
                    }
                }
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let end = self.pos;
                        *self = Framer::default();
                        return Ok(Some(end));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_finds_the_end_across_reads() {
        let text = br#" {"a": "}{\"", "b": [1, {"c": "]"}]} {"next": 1}"#;
        let mut f = Framer::default();
        // Feed it one byte more at a time: the end is found exactly once, at the right place.
        let mut found = None;
        for n in 0..=text.len() {
            if let Some(end) = f.scan(&text[..n]).expect("valid") {
                found = Some(end);
                break;
            }
        }
        let end = found.expect("a complete value");
        let v: Value = serde_json::from_slice(&text[..end]).expect("complete JSON");
        assert_eq!(v["b"][1]["c"], "]");
        assert_eq!(f.scan(&text[end..]).expect("valid"), Some(text.len() - end));
    }

    #[test]
    fn framer_refuses_a_bare_value() {
        assert!(Framer::default().scan(b"  42").is_err());
    }

    #[test]
    fn responses_must_answer_the_request() {
        let r: Response =
            serde_json::from_str(r#"{"jsonrpc":"2.0","id":3,"result":true}"#).expect("json");
        assert!(matches!(r.into_result(4), Err(Err(_))));
        let r: Response = serde_json::from_str(
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#,
        )
        .expect("json");
        assert!(matches!(
            r.into_result(4),
            Err(Ok(RpcError::Rpc { code: -32700, .. }))
        ));
        let r: Response = serde_json::from_str(r#"{"jsonrpc":"2.0","id":4}"#).expect("json");
        assert!(matches!(r.into_result(4), Err(Err(_))));
    }
}
