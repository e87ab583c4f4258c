//! The tracker's connections: a bounded accept loop and HTTP/1.1 keep-alive
//! with timeouts that shed slow clients.
//!
//! Most announces arrive whole right behind the TCP handshake and want one
//! small reply, and the listener asks the kernel (TCP_DEFER_ACCEPT) to hand
//! over a connection only once its request is there. Those are served on
//! the spot, in the accept loop, with plain
//! non-blocking calls on the accepted socket: accept4, recv, send, close —
//! no task, no timer and no registration with the reactor. Only a connection
//! whose request is not there yet (a slow client, keep-alive between
//! requests), whose reply does not fit the socket buffer, or that pipelines
//! more than `INLINE_REQUESTS` becomes a task,
//! which then has the head and lifetime deadlines below. This is what keeps
//! the CPU per announce at opentracker's (bench/tracker).
//!
//! Rules: a connection holds one permit of `max_connections` from accept to
//! close (more clients wait in the kernel's backlog); a head must be whole
//! within `HEADER_TIMEOUT` of the accept (a client that sends nothing is
//! accepted after `DEFER_ACCEPT_SECONDS`) or of the previous reply; no
//! connection lives longer than `CONNECTION_LIFETIME`; shutdown closes idle
//! connections at once and gives busy ones `DRAIN` to finish.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, Socket};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::framing::{self, Method, Parse, Status};
use super::{routes, Tracker};

/// A client must send a whole request head within this time (slow loris),
/// and an idle keep-alive connection is closed after it.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this, however it behaves.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Largest request head read; a longer one is answered 431.
const MAX_HEAD: usize = 16 * 1024;
/// How long the kernel holds a connection that has sent nothing before
/// handing it over anyway (it then gets HEADER_TIMEOUT like any other).
const DEFER_ACCEPT_SECONDS: libc::c_int = 1;
/// How long busy connections may finish after shutdown.
const DRAIN: Duration = Duration::from_secs(2);
/// Requests of one connection served inline by the accept loop; a client
/// that pipelines more goes on as a task, so that one that always has
/// another request ready cannot keep the loop from taking other clients.
const INLINE_REQUESTS: usize = 8;

pub async fn serve(
    listener: TcpListener,
    tracker: Tracker,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    let listener = listener.into_std()?;
    defer_accept(&listener);
    // SAFETY: the std listener owns its descriptor and AsyncFd owns the
    // listener, so the descriptor stays open and the same until it is dropped.
    let listener = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
        .map_err(io::Error::from)?;
    let limit = Arc::new(Semaphore::new(tracker.config().max_connections.max(1)));
    let (close_tx, close_rx) = watch::channel(());
    let mut waiting = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // At the limit, stop accepting: new clients wait in the backlog.
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => tokio::select! {
                _ = &mut shutdown => break,
                permit = limit.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            },
        };
        let (socket, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = accept(&listener) => match accepted {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!("tracker accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while waiting.try_join_next().is_some() {}
        let mut conn = Connection::new(remote);
        if let Some(unsent) = serve_ready(&tracker, &socket, &mut conn) {
            let tracker = tracker.clone();
            let close = close_rx.clone();
            waiting.spawn(serve_waiting(socket, conn, unsent, tracker, close, permit));
        }
    }
    drop(listener); // the port is free from here on
    drop(close_tx);
    let drained = tokio::time::timeout(DRAIN, async {
        while waiting.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        waiting.abort_all();
    }
    Ok(())
}

/// Asks the kernel to hand over a connection only once its request has
/// arrived (or a second has passed), so that nearly every announce is
/// served inline by `serve_ready`, with no task, timer or epoll
/// registration. Optional: where the option is refused, connections that
/// arrive empty simply take the waiting path.
#[cfg(target_os = "linux")]
fn defer_accept(listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    let seconds: libc::c_int = DEFER_ACCEPT_SECONDS;
    // SAFETY: a valid descriptor, and a c_int option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&seconds as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!("TCP_DEFER_ACCEPT refused: {}", io::Error::last_os_error());
    }
}

#[cfg(not(target_os = "linux"))]
fn defer_accept(_listener: &std::net::TcpListener) {}

async fn accept(listener: &AsyncFd<std::net::TcpListener>) -> io::Result<(Socket, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        let accepted = ready.try_io(|l| {
            SockRef::from(l.get_ref()).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
        });
        if let Ok(accepted) = accepted {
            let (socket, addr) = accepted?;
            let remote = addr
                .as_socket()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            return Ok((socket, remote));
        }
    }
}

/// One client connection's HTTP state.
struct Connection {
    remote: SocketAddr,
    /// Bytes read and not yet taken by a request head.
    buf: Vec<u8>,
    /// When the head being read must be whole.
    head_deadline: Instant,
    /// When the connection ends whatever it does.
    end_of_life: Instant,
}

enum Next {
    /// No whole head in the buffer yet.
    NeedMore,
    /// Send this, then go on reading or close.
    Reply { bytes: Vec<u8>, close: bool },
}

impl Connection {
    fn new(remote: SocketAddr) -> Self {
        let now = Instant::now();
        Connection {
            remote,
            buf: Vec::new(),
            head_deadline: now + HEADER_TIMEOUT,
            end_of_life: now + CONNECTION_LIFETIME,
        }
    }

    /// The reply to the next request in the buffer, if its head is whole.
    fn next(&mut self, tracker: &Tracker) -> Next {
        let (bytes, close, taken) = match framing::parse(&self.buf) {
            Parse::Partial if self.buf.len() < MAX_HEAD => return Next::NeedMore,
            Parse::Partial => (framing::error(Status::HEADERS_TOO_LARGE), true, 0),
            Parse::Invalid(status) => (framing::error(status), true, 0),
            Parse::Complete(head) => {
                let reply = routes::route(tracker, &head, self.remote);
                // A body is never read: answer, then close.
                let close = !head.keep_alive || head.has_body;
                let bytes =
                    framing::encode(&reply, head.method == Method::Head, close, head.http10);
                (bytes, close, head.len)
            }
        };
        self.buf.drain(..taken);
        if !close {
            self.head_deadline = Instant::now() + HEADER_TIMEOUT;
        }
        Next::Reply { bytes, close }
    }

    fn deadline(&self) -> Instant {
        self.head_deadline.min(self.end_of_life)
    }
}

/// A reply that did not fit the socket buffer at once.
struct Unsent {
    bytes: Vec<u8>,
    sent: usize,
    close: bool,
}

/// Serves what has already arrived, without waiting. `None`: the connection
/// is done (closed when the socket drops). `Some`: it must wait for the
/// client, carrying whatever reply is still to be sent.
fn serve_ready(
    tracker: &Tracker,
    socket: &Socket,
    conn: &mut Connection,
) -> Option<Option<Unsent>> {
    let mut chunk = [0u8; 2048];
    let mut served = 0;
    loop {
        if served == INLINE_REQUESTS {
            return Some(None);
        }
        match conn.next(tracker) {
            Next::NeedMore => {
                let mut reader: &Socket = socket;
                match reader.read(&mut chunk) {
                    Ok(0) => return None,
                    Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(None),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return None,
                }
            }
            Next::Reply { bytes, close } => {
                let sent = loop {
                    match socket.send_with_flags(&bytes, libc::MSG_NOSIGNAL) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return None,
                    }
                };
                if sent < bytes.len() {
                    return Some(Some(Unsent { bytes, sent, close }));
                }
                if close {
                    return None;
                }
                served += 1;
            }
        }
    }
}

/// A connection that has to wait for its client, as a task.
async fn serve_waiting(
    socket: Socket,
    mut conn: Connection,
    unsent: Option<Unsent>,
    tracker: Tracker,
    mut close: watch::Receiver<()>,
    _permit: OwnedSemaphorePermit,
) {
    let Ok(mut stream) = TcpStream::from_std(socket.into()) else {
        return;
    };
    if let Some(u) = unsent {
        if !send(&mut stream, &u.bytes[u.sent..], &conn).await || u.close {
            return;
        }
    }
    loop {
        // Checked here too: a read or write that is always ready completes
        // before its timeout is ever looked at.
        if Instant::now() >= conn.end_of_life {
            return;
        }
        match conn.next(&tracker) {
            Next::Reply { bytes, close } => {
                if !send(&mut stream, &bytes, &conn).await || close {
                    return;
                }
            }
            Next::NeedMore => {
                let idle = conn.buf.is_empty();
                conn.buf.reserve(1024);
                let read = tokio::time::timeout_at(conn.deadline(), stream.read_buf(&mut conn.buf));
                tokio::select! {
                    read = read => match read {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return, // closed, failed or too slow
                    },
                    // Shutdown closes a connection between requests.
                    _ = close.changed(), if idle => return,
                }
            }
        }
    }
}

async fn send(stream: &mut TcpStream, bytes: &[u8], conn: &Connection) -> bool {
    let deadline = (Instant::now() + HEADER_TIMEOUT).min(conn.end_of_life);
    matches!(
        tokio::time::timeout_at(deadline, stream.write_all(bytes)).await,
        Ok(Ok(()))
    )
}
