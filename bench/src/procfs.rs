//! What the bench reads of a process from `/proc`: CPU time (for CPU per 1,000 beacons/s)
//! and resident memory, the size of a data directory, and a page of a monitor's HTTP
//! listener.

use std::path::Path;
use std::time::Duration;

use crate::error::{BenchError, Result};

/// Clock ticks per second of `/proc/<pid>/stat` times: `getconf CLK_TCK`, 100 (the Linux
/// value on every common architecture) if that cannot be asked.
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// User plus system CPU time the process has used so far.
pub fn cpu_time(pid: u32, ticks_per_s: f64) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text =
        std::fs::read_to_string(&path).map_err(|e| BenchError::io(format!("read {path}"), e))?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields after
    // the last ')'. utime and stime are fields 14 and 15, so 12th and 13th after it.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| BenchError::failed(format!("{path}: no command name")))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| BenchError::failed(format!("{path}: field {} is not a number", i + 3)))
    };
    let ticks = field(11)? + field(12)?;
    Ok(Duration::from_secs_f64(ticks as f64 / ticks_per_s))
}

/// Resident set size in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text =
        std::fs::read_to_string(&path).map_err(|e| BenchError::io(format!("read {path}"), e))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| BenchError::failed(format!("{path}: no VmRSS line")))
}

/// Bytes of all files under `dir` (apparent sizes).
pub fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let entries =
        std::fs::read_dir(dir).map_err(|e| BenchError::io(format!("list {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| BenchError::io(format!("list {}", dir.display()), e))?;
        let meta = entry
            .metadata()
            .map_err(|e| BenchError::io(format!("stat {}", entry.path().display()), e))?;
        if meta.is_dir() {
            total += dir_size(&entry.path())?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

/// A CPU-time reading of one process, to take the difference of later.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    pub cpu: Duration,
    pub at: std::time::Instant,
}

impl CpuSample {
    pub fn take(pid: u32, ticks_per_s: f64) -> Result<CpuSample> {
        Ok(CpuSample {
            cpu: cpu_time(pid, ticks_per_s)?,
            at: std::time::Instant::now(),
        })
    }

    /// Cores used on average since `earlier` (1.0 = one core busy the whole time).
    pub fn cores_since(&self, earlier: &CpuSample) -> f64 {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        self.cpu.saturating_sub(earlier.cpu).as_secs_f64() / wall
    }
}

/// This process's own pid, for the bench's CPU use.
pub fn own_pid() -> u32 {
    std::process::id()
}

/// The body of `GET path` from a plain HTTP/1.1 listener at `addr`, within 5 s.
pub async fn http_get(addr: &str, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let what = format!("GET http://{addr}{path}");
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .map_err(|_| BenchError::timeout(what.clone(), Duration::from_secs(5)))?
        .map_err(|e| BenchError::io(what.clone(), e))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| BenchError::failed(format!("{what}: no HTTP response")))?;
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default();
        return Err(BenchError::failed(format!("{what}: {status}")));
    }
    Ok(body.to_owned())
}
