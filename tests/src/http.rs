//! Just enough HTTP and Prometheus text parsing to test the monitors' HTTP listener without
//! pulling an HTTP client into the workspace: one `GET` per connection, `Connection: close`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP response: the status code and the body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// `GET path` on `addr`. An error is a string, for test messages.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Reply, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8(raw).map_err(|e| format!("not utf-8: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {text:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let mut content_type = None;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-type") {
                content_type = Some(v.trim().to_owned());
            }
            if k.eq_ignore_ascii_case("transfer-encoding") && v.trim() == "chunked" {
                chunked = true;
            }
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok(Reply {
        status,
        content_type,
        body,
    })
}

fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| "truncated chunk size".to_owned())?;
        let size = usize::from_str_radix(size.trim(), 16).map_err(|e| format!("chunk: {e}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after
            .get(..size)
            .ok_or_else(|| "truncated chunk".to_owned())?;
        out.push_str(chunk);
        rest = after.get(size + 2..).unwrap_or("");
    }
}

/// One sample: its labels, sorted.
pub type Labels = BTreeMap<String, String>;

/// Samples by metric name (as written, `_total` included).
#[derive(Debug, Default, Clone)]
pub struct Samples(pub BTreeMap<String, Vec<(Labels, f64)>>);

impl Samples {
    /// Parses Prometheus / OpenMetrics text: `name{k="v",...} value` lines; `#` lines are
    /// metadata and skipped. Refuses anything else, so a malformed exposition fails a test.
    pub fn parse(text: &str) -> Result<Samples, String> {
        let mut out = Samples::default();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("no value in {line:?}"))?;
            let value: f64 = value
                .parse()
                .map_err(|e| format!("bad value in {line:?}: {e}"))?;
            let (name, labels) = match series.split_once('{') {
                None => (series, Labels::new()),
                Some((name, rest)) => {
                    let inner = rest
                        .strip_suffix('}')
                        .ok_or_else(|| format!("unclosed labels in {line:?}"))?;
                    (
                        name,
                        parse_labels(inner).map_err(|e| format!("{e} in {line:?}"))?,
                    )
                }
            };
            out.0
                .entry(name.to_owned())
                .or_default()
                .push((labels, value));
        }
        Ok(out)
    }

    /// The value of the series `name` whose labels include all of `want`.
    pub fn get(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.0.get(name)?.iter().find_map(|(labels, v)| {
            want.iter()
                .all(|(k, w)| labels.get(*k).is_some_and(|l| l == w))
                .then_some(*v)
        })
    }
}

fn parse_labels(mut s: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    while !s.is_empty() {
        let (k, rest) = s.split_once("=\"").ok_or("label without =\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("dangling escape".into()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.insert(k.trim().to_owned(), value);
        s = rest[end + 1..].trim_start_matches(',');
    }
    Ok(labels)
}
