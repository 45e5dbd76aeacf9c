//! A TCP relay that can be cut: the gateway talks to the monitors through it, and a test
//! blocks it to cut the gateway off while its process stays alive. Blocked, it stops moving
//! bytes both ways (in-flight data is held, as a partition would), and refuses new
//! connections.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: String,
    blocked: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
    /// Relayed connections, closed when the proxy is dropped.
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    /// Relay `127.0.0.1:<ephemeral>` to `target`.
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let (tx, _) = watch::channel(false);
        let blocked = Arc::new(tx);
        let gate = blocked.clone();
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let tracked = conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if *gate.borrow() {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let gate = gate.clone();
                let relay = tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::join!(
                        pump(ri, wo, gate.subscribe()),
                        pump(ro, wi, gate.subscribe())
                    );
                });
                if let Ok(mut list) = tracked.lock() {
                    list.push(relay.abort_handle());
                }
            }
        });
        Proxy {
            addr,
            blocked,
            task,
            conns,
        }
    }

    pub fn block(&self) {
        self.blocked.send_replace(true);
    }

    pub fn unblock(&self) {
        self.blocked.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(list) = self.conns.lock() {
            for c in list.iter() {
                c.abort();
            }
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if gate.wait_for(|blocked| !blocked).await.is_err() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = gate.wait_for(|blocked| *blocked) => continue,
        };
        // Hold what was read while blocked: it is delivered, late, only if unblocked.
        if gate.wait_for(|blocked| !blocked).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
