//! The gRPC listener's connections: how many are served at once, and how dead ones are
//! noticed.
//!
//! Every accepted connection holds a permit of [`ConnectionLimit`] for as long as it is
//! open; one accepted while none is left is closed at once, before any TLS handshake or
//! HTTP/2 state is spent on it, and counted. Connections already served are never cut to
//! make room: a gateway's session is worth more than a newcomer's.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use gwmon_proto::tls::{self, Tls};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpIncoming};
use tracing::{debug, warn};

/// TCP keepalive on accepted connections: a peer that vanished without a FIN (power loss,
/// a cut cable) is found by the kernel even while HTTP/2 is idle.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// HTTP/2 PING period on every connection, and how long an unanswered PING may take before
/// the connection is closed: a client that stopped answering releases its connection (and
/// its permit) within half a minute.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Concurrent streams one connection may open: a gateway needs one (its session), a peer
/// monitor a handful of Raft calls, an operator one per command.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// The largest header block a request may send (metadata is a few hundred bytes).
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// How many connections the listener serves at once.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    max: u32,
    refused: Arc<AtomicU64>,
}

impl ConnectionLimit {
    pub fn new(max: u32) -> Self {
        ConnectionLimit {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Connections closed on arrival because the limit was reached, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        let free = u32::try_from(self.permits.available_permits()).unwrap_or(u32::MAX);
        self.max.saturating_sub(free)
    }

    /// `incoming` with TCP keepalive and no Nagle delay, where each connection holds a
    /// permit and one beyond the limit is closed as it arrives.
    pub fn apply(
        &self,
        incoming: TcpIncoming,
    ) -> impl Stream<Item = Result<Limited<TcpStream>, io::Error>> + Send + 'static {
        let limit = self.clone();
        incoming
            .with_nodelay(Some(true))
            .with_keepalive(Some(TCP_KEEPALIVE))
            .filter_map(move |accepted| match accepted {
                Err(e) => Some(Err(e)),
                Ok(stream) => limit.admit(stream).map(Ok),
            })
    }

    fn admit(&self, stream: TcpStream) -> Option<Limited<TcpStream>> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(Limited {
                io: stream,
                _permit: permit,
            }),
            Err(_) => {
                let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                // The first refusal and then one line per thousand: a flood must not also
                // flood the log.
                if refused == 1 || refused.is_multiple_of(1000) {
                    let peer = stream
                        .peer_addr()
                        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
                    warn!(max = self.max, refused, %peer,
                        "connection closed on arrival: max_connections are open");
                }
                None
            }
        }
    }
}

/// The content type of a TLS record carrying a handshake message: every TLS connection's
/// first byte.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A connection holding its permit until it is dropped.
#[derive(Debug)]
pub struct Limited<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
}

impl<IO: Connected> Connected for Limited<IO> {
    type ConnectInfo = IO::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Limited<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Limited<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The TLS handshakes of `incoming`'s connections, each with the certificate `tls` holds
/// when the connection arrives (so a [`Tls::reload`] applies to the next connection), run
/// side by side so one slow client delays nobody, and each bounded by
/// [`tls::HANDSHAKE_TIMEOUT`]. A failed handshake closes its connection and is logged at
/// debug level: a client from another CA is refused here, before any request is read.
///
/// A connection whose first byte is not a TLS handshake record (a client speaking plain
/// HTTP/2) is closed without an answer: a TLS alert sent to it would read as a garbled
/// HTTP/2 frame, where a closed connection reads as the monitor being out of reach.
pub fn tls_handshakes<S>(
    incoming: S,
    tls: Tls,
) -> impl Stream<Item = Result<TlsStream<Limited<TcpStream>>, io::Error>> + Send + 'static
where
    S: Stream<Item = Result<Limited<TcpStream>, io::Error>> + Send + 'static,
{
    let (done, handshaken) = mpsc::channel(64);
    tokio::spawn(async move {
        tokio::pin!(incoming);
        loop {
            let accepted = tokio::select! {
                // The server stopped: release the listener now, not at the next arrival.
                () = done.closed() => break,
                accepted = incoming.next() => accepted,
            };
            match accepted {
                None => break,
                Some(Err(e)) => {
                    if done.send(Err(e)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(io)) => {
                    let acceptor = TlsAcceptor::from(tls.server_config());
                    let done = done.clone();
                    tokio::spawn(async move {
                        let handshake = async {
                            let mut first = [0u8; 1];
                            match io.io.peek(&mut first).await {
                                Ok(1) if first[0] == TLS_HANDSHAKE_RECORD => {}
                                Ok(_) => {
                                    return Err(io::Error::other("not TLS: closed unanswered"))
                                }
                                Err(e) => return Err(e),
                            }
                            acceptor.accept(io).await
                        };
                        match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, handshake).await {
                            Ok(Ok(stream)) => {
                                let _ = done.send(Ok(stream)).await;
                            }
                            Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
                            Err(_) => debug!("TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(handshaken)
}
