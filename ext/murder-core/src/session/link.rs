//! One peer connection's two directions, plain BitTorrent or sealed (a
//! closed swarm, see `crate::secure`). Everything above works on plain
//! bytes and cannot tell the two apart, except that a sealed writer may hold
//! sealed bytes the socket did not take yet (`has_backlog`), which the peer
//! loop writes out before it waits for anything else, and that the upload
//! queue goes through `write_queue`, which seals a frame where it lies in
//! the queue: the peer passes the same queue head until that frame is out.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::secure::{self, SealedReader, SealedWriter, SwarmKey};
use crate::wire::{write_handshake, Handshake, WireError};

pub(super) enum Reader {
    Plain(OwnedReadHalf),
    Sealed(Box<SealedReader>),
}

pub(super) enum Writer {
    Plain(OwnedWriteHalf),
    Sealed(Box<SealedWriter>),
}

/// A connection, made ready for the BitTorrent handshake: as is, or after
/// the Noise handshake of a closed swarm (`initiator`: we dialled).
pub(super) async fn open(
    stream: TcpStream,
    key: Option<&SwarmKey>,
    initiator: bool,
) -> io::Result<(Reader, Writer)> {
    Ok(match key {
        None => {
            let (r, w) = stream.into_split();
            (Reader::Plain(r), Writer::Plain(w))
        }
        Some(key) => {
            let (r, w) = secure::open(stream, key, initiator).await?;
            (Reader::Sealed(Box::new(r)), Writer::Sealed(Box::new(w)))
        }
    })
}

impl Writer {
    pub fn has_backlog(&self) -> bool {
        match self {
            Writer::Plain(_) => false,
            Writer::Sealed(w) => w.has_backlog(),
        }
    }

    /// Writes from the head of a peer's upload queue; returns how many of
    /// its bytes are written. A sealed link seals a frame in place in
    /// `queue` and answers only once all of it is written: until then the
    /// caller passes the same queue again (see
    /// `SealedWriter::poll_write_queue`).
    pub async fn write_queue(&mut self, queue: &mut [u8]) -> io::Result<usize> {
        match self {
            Writer::Plain(w) => w.write(queue).await,
            Writer::Sealed(w) => std::future::poll_fn(|cx| w.poll_write_queue(cx, queue)).await,
        }
    }

    /// Our BitTorrent handshake, all of it on the wire.
    pub async fn handshake(&mut self, ours: &Handshake) -> Result<(), WireError> {
        write_handshake(self, ours).await?;
        self.flush().await?;
        Ok(())
    }
}

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Reader::Plain(r) => Pin::new(r).poll_read(cx, buf),
            Reader::Sealed(r) => Pin::new(r.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_write(cx, buf),
            Writer::Sealed(w) => Pin::new(w.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_flush(cx),
            Writer::Sealed(w) => Pin::new(w.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_shutdown(cx),
            Writer::Sealed(w) => Pin::new(w.as_mut()).poll_shutdown(cx),
        }
    }
}
