//! gRPC over turmoil's simulated TCP: an accept stream for a monitor's tonic server, and a
//! connector for every client (Raft peers, gateway sessions, the admin).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::Stream;
use gwmon_client::session::DialFuture;
use gwmon_monitor::raft::network::{ConnectError, ConnectFuture, Connector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::{Channel, Endpoint, Uri};

/// The port every simulated monitor listens on.
pub const MONITOR_PORT: u16 = 7400;

/// One accepted simulated connection, as tonic's server wants it.
pub struct SimIo(turmoil::net::TcpStream);

impl AsyncRead for SimIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for SimIo {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// The connections accepted on `listener`, for `Monitor::start_custom`.
pub fn incoming(
    listener: turmoil::net::TcpListener,
) -> impl Stream<Item = Result<SimIo, io::Error>> + Send + 'static {
    futures_util::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| SimIo(s));
        Some((next, l))
    })
}

/// A gRPC channel to `addr` (`host:port`) over the simulated network, connected within
/// `timeout`.
pub async fn channel(addr: &str, timeout: Duration) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("{addr}: {e}"))?
        .connect_timeout(timeout)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true);
    let connect = endpoint.connect_with_connector(tower::service_fn(|uri: Uri| async move {
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri.port_u16().unwrap_or(MONITOR_PORT);
        let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
        Ok::<_, io::Error>(TokioIo::new(stream))
    }));
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr}: connect timed out")),
    }
}

/// Raft's connector and the gateways' dialer: both dial the simulated network.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimNet;

impl Connector for SimNet {
    fn connect<'a>(&'a self, addr: &'a str) -> ConnectFuture<'a> {
        Box::pin(async move {
            channel(addr, Duration::from_secs(1))
                .await
                .map_err(|reason| ConnectError::Refused {
                    addr: addr.to_owned(),
                    reason,
                })
        })
    }
}

impl gwmon_client::Dialer for SimNet {
    fn dial(&self, addr: &str, timeout: Duration) -> DialFuture {
        let addr = addr.to_owned();
        Box::pin(async move { channel(&addr, timeout).await })
    }
}
