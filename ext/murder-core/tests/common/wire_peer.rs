//! Scripted peers for tests: a listener that speaks the wire protocol the
//! way a test says, with the crate's own message codec.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use murder_core::wire::{max_message_len, take_message, Handshake, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Reads whole messages off one connection.
pub struct Reader {
    half: OwnedReadHalf,
    buf: BytesMut,
    max: usize,
}

impl Reader {
    pub fn new(half: OwnedReadHalf, piece_count: usize) -> Self {
        Reader {
            half,
            buf: BytesMut::with_capacity(64 * 1024),
            max: max_message_len(piece_count),
        }
    }

    /// The next message; `None` when the connection ends or misbehaves.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            match take_message(&mut self.buf, self.max) {
                Ok(Some(m)) => return Some(m),
                Ok(None) => {}
                Err(_) => return None,
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            match self.half.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

/// Sends messages on one connection.
pub struct Writer(pub OwnedWriteHalf);

impl Writer {
    pub async fn send(&mut self, messages: &[Message]) -> bool {
        let mut out = BytesMut::new();
        for m in messages {
            m.encode(&mut out);
        }
        self.0.write_all(&out).await.is_ok()
    }
}

/// A peer on 127.0.0.1 that runs `script` for every connection after the
/// handshake (answering with `reserved` bits and peer id `id`). Returns its
/// address and the number of connections it was sent.
pub fn scripted_peer<F, Fut>(
    reserved: [u8; 8],
    id: [u8; 20],
    piece_count: usize,
    script: F,
) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(Reader, Writer) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let script = Arc::new(script);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                tokio::spawn(async move {
                    let Some((reader, writer)) = handshake(stream, reserved, id, piece_count).await
                    else {
                        return;
                    };
                    script(reader, writer).await;
                });
            }
        });
    });
    (addr, connections)
}

async fn handshake(
    mut stream: TcpStream,
    reserved: [u8; 8],
    id: [u8; 20],
    piece_count: usize,
) -> Option<(Reader, Writer)> {
    let _ = stream.set_nodelay(true);
    let theirs = Handshake::read(&mut stream).await.ok()?;
    let ours = Handshake {
        reserved,
        info_hash: theirs.info_hash,
        peer_id: id,
    };
    stream.write_all(&ours.to_bytes()).await.ok()?;
    let (r, w) = stream.into_split();
    Some((Reader::new(r, piece_count), Writer(w)))
}

/// The reserved bits of a peer with the fast extension (BEP 6) only.
pub const FAST: [u8; 8] = [0, 0, 0, 0, 0, 0, 0, 0x04];
/// A peer that offers no extension at all (BEP 3 only).
pub const PLAIN: [u8; 8] = [0; 8];

/// Dials `addr` and handshakes for `info_hash` with `reserved` bits.
pub async fn dial(
    addr: SocketAddr,
    reserved: [u8; 8],
    id: [u8; 20],
    info_hash: [u8; 20],
    piece_count: usize,
) -> Option<(Reader, Writer)> {
    let stream = TcpStream::connect(addr).await.ok()?;
    handshake_on(stream, reserved, id, info_hash, piece_count).await
}

/// Handshakes for `info_hash` on a connected `stream` (one a test set up
/// its own way), as `dial` does.
pub async fn handshake_on(
    mut stream: TcpStream,
    reserved: [u8; 8],
    id: [u8; 20],
    info_hash: [u8; 20],
    piece_count: usize,
) -> Option<(Reader, Writer)> {
    let _ = stream.set_nodelay(true);
    let ours = Handshake {
        reserved,
        info_hash,
        peer_id: id,
    };
    stream.write_all(&ours.to_bytes()).await.ok()?;
    let theirs = Handshake::read(&mut stream).await.ok()?;
    if theirs.info_hash != info_hash {
        return None;
    }
    let (r, w) = stream.into_split();
    Some((Reader::new(r, piece_count), Writer(w)))
}
