//! Closed swarms: peers that prove they hold the deploy's secret before any
//! torrent data flows, and a wire that is encrypted and authenticated.
//!
//! The deployer makes a fresh [`SwarmSecret`] per deploy and hands it to
//! each host over SSH (the deploy ticket on standard input). From it and
//! the info-hash come two values, so one secret cannot be replayed into
//! another torrent's swarm:
//!
//! - the pre-shared key of a Noise handshake (`Noise_NNpsk0_25519_AESGCM_SHA256`,
//!   through `snow`): both sides must hold it for the handshake to finish,
//!   and every byte after it, the BitTorrent handshake included, travels in
//!   sealed frames. A peer without the key sees nothing but a failed
//!   handshake; it never learns the info-hash;
//! - the tracker token (`token=` on announces, scrapes and the tracker's
//!   pages): without it the tracker answers for a closed torrent exactly as
//!   for one it does not know.
//!
//! Framing on the wire: each message is sent as a 2-byte big-endian length
//! and the message (Noise's own limit of 65,535 bytes). After the
//! handshake, each direction seals its frames with AEGIS-128X4 (the `aegis`
//! crate, libaegis; an AEAD of the IRTF CFRG's draft) under a 128-bit key
//! derived from that direction's key of Noise's Split() (HMAC-SHA256 with a
//! label, truncated), a 128-bit nonce counting the direction's frames from
//! 0 (big-endian in the last 8 bytes), no associated data and a 16-byte
//! tag. Frames are sealed and opened in place in our own buffers.
//!
//! Why not Noise's own AES-256-GCM transport: the seeder of a deploy seals
//! every byte it serves, and on the x86 servers we measured AES-256-GCM
//! (ring, VAES) runs at 6.5-8.6 GB/s, a quarter of the open seeder's whole
//! CPU per GiB, where AEGIS-128X4 runs at 42 GB/s (`bench/pair`).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use aegis::aegis128x4::Aegis128X4;
use bytes::{Buf, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use snow::Builder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

const NOISE: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";
/// Bound into the handshake: a peer of another wire version (the AES-GCM
/// transport was `murder/1`) fails the handshake instead of garbling frames.
const PROLOGUE: &[u8] = b"murder/2 aegis128x4 ";
/// Noise's longest message, and the transport's authentication tag.
const MAX_MESSAGE: usize = 65535;
const TAG: usize = 16;
/// Plain bytes per frame.
const MAX_PLAIN: usize = MAX_MESSAGE - TAG;

/// A deploy's secret: 32 random bytes. Shown only as hex on purpose
/// (`to_hex`); `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct SwarmSecret([u8; 32]);

impl fmt::Debug for SwarmSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SwarmSecret(..)")
    }
}

impl SwarmSecret {
    /// A fresh secret from the operating system's random source.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::InvalidArgument(format!("no random source: {e}")))?;
        Ok(SwarmSecret(bytes))
    }

    /// The secret from 64 hex digits (surrounding white space is ignored,
    /// so a file that ends in a newline reads as it should).
    pub fn from_hex(text: &str) -> Result<Self> {
        let text = text.trim();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| {
            Error::InvalidArgument("a swarm secret is 64 hex digits (32 bytes)".into())
        })?;
        Ok(SwarmSecret(bytes))
    }

    /// The secret in a file of 64 hex digits. The file must be readable by
    /// its owner alone: a secret others can read is no secret.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = read_private(path)?;
        Self::from_hex(&text)
            .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn derive(&self, purpose: &[u8], info_hash: &[u8; 20]) -> [u8; 32] {
        // HMAC-SHA256 as a key-derivation function, keyed by the secret.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        mac.update(purpose);
        mac.update(info_hash);
        mac.finalize().into_bytes().into()
    }

    /// The Noise pre-shared key of this torrent's swarm.
    pub fn swarm_key(&self, info_hash: &[u8; 20]) -> SwarmKey {
        SwarmKey {
            psk: self.derive(b"murder swarm key\0", info_hash),
            info_hash: *info_hash,
        }
    }

    /// What peers of this torrent show the tracker (64 hex digits).
    pub fn tracker_token(&self, info_hash: &[u8; 20]) -> String {
        hex::encode(self.derive(b"murder tracker token\0", info_hash))
    }
}

/// A file only its owner may read (secrets and tokens), as text.
pub fn read_private(path: &std::path::Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::InvalidArgument(format!(
            "{}: readable by other users (mode {:o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text.trim().to_string())
}

/// Compares two tokens in time that does not depend on where they differ.
pub fn tokens_match(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// What both ends of one torrent's closed swarm hold.
#[derive(Clone)]
pub struct SwarmKey {
    psk: [u8; 32],
    info_hash: [u8; 20],
}

impl fmt::Debug for SwarmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SwarmKey(..)")
    }
}

fn noise_error(e: snow::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("closed swarm: {e} (the peer does not hold this deploy's secret)"),
    )
}

async fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let len = stream.read_u16().await? as usize;
    let mut frame = vec![0u8; len];
    stream.read_exact(&mut frame).await?;
    Ok(frame)
}

async fn write_frame(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(2 + message.len());
    frame.extend_from_slice(&(message.len() as u16).to_be_bytes());
    frame.extend_from_slice(message);
    stream.write_all(&frame).await
}

/// Runs the Noise handshake on a fresh connection (`initiator`: we dialled)
/// and returns the two sealed directions. Fails, and the caller drops the
/// connection, when the other side does not hold the key. The caller bounds
/// the time it may take.
pub async fn open(
    mut stream: TcpStream,
    key: &SwarmKey,
    initiator: bool,
) -> io::Result<(SealedReader, SealedWriter)> {
    let params = NOISE.parse().map_err(noise_error)?;
    let mut prologue = PROLOGUE.to_vec();
    prologue.extend_from_slice(&key.info_hash);
    let builder = Builder::new(params)
        .psk(0, &key.psk)
        .and_then(|b| b.prologue(&prologue))
        .map_err(noise_error)?;
    let mut state = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .map_err(noise_error)?;
    let mut message = vec![0u8; MAX_MESSAGE];
    let mut payload = vec![0u8; MAX_MESSAGE];
    if initiator {
        let n = state
            .write_message(&[], &mut message)
            .map_err(noise_error)?;
        write_frame(&mut stream, &message[..n]).await?;
        let reply = read_frame(&mut stream).await?;
        state
            .read_message(&reply, &mut payload)
            .map_err(noise_error)?;
    } else {
        let hello = read_frame(&mut stream).await?;
        state
            .read_message(&hello, &mut payload)
            .map_err(noise_error)?;
        let n = state
            .write_message(&[], &mut message)
            .map_err(noise_error)?;
        write_frame(&mut stream, &message[..n]).await?;
    }
    if !state.is_handshake_finished() {
        return Err(noise_error(snow::Error::State(
            snow::error::StateProblem::HandshakeNotFinished,
        )));
    }
    // Split(): the initiator sends with the first key, the responder with
    // the second.
    let (first, second) = state.dangerously_get_raw_split();
    let (send, receive) = if initiator {
        (first, second)
    } else {
        (second, first)
    };
    let (read, write) = stream.into_split();
    Ok((
        SealedReader {
            inner: read,
            cipher: FrameCipher::new(&receive),
            raw: BytesMut::with_capacity(READ_AHEAD),
            plain: Vec::with_capacity(MAX_PLAIN),
            plain_at: 0,
        },
        SealedWriter {
            inner: write,
            cipher: FrameCipher::new(&send),
            frame: vec![0u8; 2 + MAX_MESSAGE],
            frame_len: 0,
            at: 0,
            in_place: None,
        },
    ))
}

/// One direction's transport cipher: AEGIS-128X4 under a key derived from
/// that direction's Split() key, the nonce counting its frames.
struct FrameCipher {
    key: [u8; 16],
    nonce: u64,
}

impl FrameCipher {
    fn new(split_key: &[u8; 32]) -> Self {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(split_key)
            .expect("HMAC takes a key of any length");
        mac.update(b"murder transport aegis128x4\0");
        let mut key = [0u8; 16];
        key.copy_from_slice(&mac.finalize().into_bytes()[..16]);
        FrameCipher { key, nonce: 0 }
    }

    /// The next frame's cipher (2^64-1 is never used; a link would need
    /// 10^21 bytes to get there, but it ends rather than wrap).
    fn next(&mut self) -> io::Result<Aegis128X4<TAG>> {
        if self.nonce == u64::MAX {
            return Err(io::Error::other("closed swarm: nonces exhausted"));
        }
        let mut nonce = [0u8; 16];
        nonce[8..].copy_from_slice(&self.nonce.to_be_bytes());
        self.nonce += 1;
        Ok(Aegis128X4::new(&self.key, &nonce))
    }

    /// Seals `plain` into `out` (one pass: no copy before the cipher) and
    /// appends the tag; returns the sealed length, `plain.len() + TAG`.
    fn seal(&mut self, plain: &[u8], out: &mut [u8]) -> io::Result<usize> {
        let len = plain.len();
        let mut sealing = self.next()?.encryptor(&[]);
        sealing.update(plain, &mut out[..len]);
        out[len..len + TAG].copy_from_slice(&sealing.finalize());
        Ok(len + TAG)
    }

    /// Seals `text` in place; returns its tag.
    fn seal_in_place(&mut self, text: &mut [u8]) -> io::Result<[u8; TAG]> {
        Ok(self.next()?.encrypt_in_place(text, &[]))
    }

    /// Opens a sealed message (the text, then its tag) in place; returns
    /// the plain bytes' length.
    fn open(&mut self, message: &mut [u8]) -> io::Result<usize> {
        let cipher = self.next()?;
        let len = message.len().checked_sub(TAG).ok_or_else(forged)?;
        let (text, tag) = message.split_at_mut(len);
        let tag: &[u8; TAG] = (&*tag).try_into().map_err(|_| forged())?;
        cipher
            .decrypt_in_place(text, tag, &[])
            .map_err(|_| forged())?;
        Ok(len)
    }
}

/// The receiving direction of a closed-swarm connection: plain bytes out,
/// after each frame passed authentication. Frames open straight into the
/// caller's buffer, as many as fit, so a sealed link costs the peer loop no
/// more turns than a plain one.
pub struct SealedReader {
    inner: OwnedReadHalf,
    cipher: FrameCipher,
    /// Bytes received and not yet opened.
    raw: BytesMut,
    /// Plain bytes of a frame that did not fit the caller's buffer;
    /// `plain[plain_at..]` is unread.
    plain: Vec<u8>,
    plain_at: usize,
}

/// Bytes asked of the socket at a time.
const READ_AHEAD: usize = 256 * 1024;

fn forged() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "closed swarm: a frame failed authentication",
    )
}

impl SealedReader {
    /// The length of the sealed message at the head of `raw`, if it is all
    /// there.
    fn whole_frame(&self) -> Option<usize> {
        let head = self.raw.get(..2)?;
        let len = u16::from_be_bytes([head[0], head[1]]) as usize;
        (self.raw.len() >= 2 + len).then_some(len)
    }

    /// Opens the frame at the head of `raw` (`len` sealed bytes) where it
    /// lies; the plain bytes are then `raw[2..2 + n]`, until `consume`.
    fn open_in_place(&mut self, len: usize) -> io::Result<usize> {
        if len < TAG {
            return Err(forged());
        }
        self.cipher.open(&mut self.raw[2..2 + len])
    }
}

impl AsyncRead for SealedReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.plain_at < this.plain.len() {
            let n = (this.plain.len() - this.plain_at).min(buf.remaining());
            buf.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
            this.plain_at += n;
            return Poll::Ready(Ok(()));
        }
        loop {
            let mut gave = false;
            while let Some(len) = this.whole_frame() {
                if gave && buf.remaining() < len.saturating_sub(TAG) {
                    break; // the next frame goes to the next read
                }
                let n = this.open_in_place(len)?;
                if n == 0 {
                    // We never seal one; read as nothing, it would pass for
                    // the end of the stream.
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "closed swarm: an empty frame",
                    )));
                }
                let give = n.min(buf.remaining());
                buf.put_slice(&this.raw[2..2 + give]);
                if give < n {
                    this.plain.clear();
                    this.plain.extend_from_slice(&this.raw[2 + give..2 + n]);
                    this.plain_at = 0;
                }
                this.raw.advance(2 + len);
                gave = true;
                if give < n {
                    return Poll::Ready(Ok(()));
                }
            }
            if gave {
                return Poll::Ready(Ok(()));
            }
            if this.raw.capacity() - this.raw.len() < 2 + MAX_MESSAGE {
                this.raw.reserve(READ_AHEAD);
            }
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.raw
            ))?;
            if n == 0 {
                if this.raw.is_empty() {
                    return Poll::Ready(Ok(())); // a clean end
                }
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}

/// The sending direction: each write seals up to one frame of the bytes
/// given. A frame the socket did not take whole stays in `frame` (see
/// `has_backlog`) and goes out first on the next write or flush.
///
/// A peer's upload queue goes another way, `poll_write_queue`: the frame
/// is sealed where it lies in the caller's queue and written from there,
/// with its length and tag around it (one pass over the data fewer, and
/// the socket copies from memory the peer has just touched).
pub struct SealedWriter {
    inner: OwnedWriteHalf,
    cipher: FrameCipher,
    /// `frame[at..frame_len]` is sealed and not yet written.
    frame: Vec<u8>,
    frame_len: usize,
    at: usize,
    /// A frame sealed in place at the head of the caller's queue and not
    /// yet written whole.
    in_place: Option<InPlaceFrame>,
}

/// A frame of `len` plain bytes sealed in place: on the wire it is
/// `head`, the caller's `len` sealed bytes, then `tag`; `at` of those
/// `2 + len + TAG` bytes are written.
struct InPlaceFrame {
    len: usize,
    head: [u8; 2],
    tag: [u8; TAG],
    at: usize,
}

impl SealedWriter {
    /// Sealed bytes still waiting for the socket.
    pub fn has_backlog(&self) -> bool {
        self.at < self.frame_len || self.in_place.is_some()
    }

    /// Writes the head of `queue` as one frame sealed in place: the
    /// frame's bytes of `queue` are replaced by their sealed form, and
    /// until this returns `Ready(Ok(n))` (the whole frame of `n` bytes is
    /// on the socket) the caller passes the same queue again, those bytes
    /// untouched at its head (it may have appended to it). Cancel-safe in
    /// that sense: the frame under way lives here.
    pub fn poll_write_queue(
        &mut self,
        cx: &mut Context<'_>,
        queue: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(cx))?;
        if self.in_place.is_none() {
            if queue.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let len = queue.len().min(MAX_PLAIN);
            let tag = self.cipher.seal_in_place(&mut queue[..len])?;
            self.in_place = Some(InPlaceFrame {
                len,
                head: ((len + TAG) as u16).to_be_bytes(),
                tag,
                at: 0,
            });
        }
        let frame = self.in_place.as_mut().expect("a frame under way");
        if queue.len() < frame.len {
            return Poll::Ready(Err(io::Error::other(
                "closed swarm: the queue lost a frame that was under way",
            )));
        }
        let total = 2 + frame.len + TAG;
        while frame.at < total {
            let at = frame.at;
            let body_at = at.saturating_sub(2).min(frame.len);
            let tag_at = at.saturating_sub(2 + frame.len);
            let parts = [
                io::IoSlice::new(&frame.head[at.min(2)..]),
                io::IoSlice::new(&queue[body_at..frame.len]),
                io::IoSlice::new(&frame.tag[tag_at..]),
            ];
            let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &parts))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            frame.at += n;
        }
        let len = frame.len;
        self.in_place = None;
        Poll::Ready(Ok(len))
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.at < self.frame_len {
            let n = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.frame[self.at..self.frame_len])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.at += n;
        }
        Poll::Ready(Ok(()))
    }

    fn seal(&mut self, plain: &[u8]) -> io::Result<()> {
        // `frame` keeps its full size: no clearing of 64 KiB per frame.
        let n = self.cipher.seal(plain, &mut self.frame[2..])?;
        self.frame[..2].copy_from_slice(&(n as u16).to_be_bytes());
        self.frame_len = 2 + n;
        self.at = 0;
        Ok(())
    }
}

impl AsyncWrite for SealedWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.in_place.is_some() {
            // Its rest can only come from the caller's queue.
            return Poll::Ready(Err(io::Error::other(
                "closed swarm: a write between the parts of a queued frame",
            )));
        }
        ready!(this.poll_drain(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_PLAIN);
        this.seal(&buf[..n])?;
        // The bytes are taken; what the socket does not take now is the
        // backlog.
        match this.poll_drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(n)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const HASH: [u8; 20] = [7; 20];

    async fn pair(
        a: &SwarmKey,
        b: &SwarmKey,
    ) -> (
        io::Result<(SealedReader, SealedWriter)>,
        io::Result<(SealedReader, SealedWriter)>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (b, a) = (b.clone(), a.clone());
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            open(s, &b, false).await
        });
        let client = open(TcpStream::connect(addr).await.unwrap(), &a, true).await;
        (client, server.await.unwrap())
    }

    #[tokio::test]
    async fn bytes_cross_a_closed_link_intact_in_both_directions() {
        let key = SwarmSecret::generate().unwrap().swarm_key(&HASH);
        let (client, server) = pair(&key, &key).await;
        let ((mut cr, mut cw), (mut sr, mut sw)) = (client.unwrap(), server.unwrap());
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            cw.write_all(&sent).await.unwrap();
            cw.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        sr.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, data);
        sw.write_all(b"back").await.unwrap();
        sw.flush().await.unwrap();
        let mut four = [0u8; 4];
        cr.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"back");
    }

    /// A queue written through `poll_write_queue` arrives intact when the
    /// socket takes each frame in several parts and the queue grows at its
    /// end meanwhile (as a peer's upload queue does), and the queue's
    /// written bytes are what the caller may drop.
    #[tokio::test]
    async fn a_queue_sealed_in_place_arrives_intact_across_partial_writes() {
        let key = SwarmSecret::generate().unwrap().swarm_key(&HASH);
        let (client, server) = pair(&key, &key).await;
        let ((_cr, mut cw), (mut sr, _sw)) = (client.unwrap(), server.unwrap());
        let _ = socket2::SockRef::from(cw.inner.as_ref()).set_send_buffer_size(4096);
        let data: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let sent_data = data.clone();
        let writer = tokio::spawn(async move {
            let mut queue: Vec<u8> = Vec::new();
            let (mut fed, mut sent) = (0, 0);
            while sent < sent_data.len() {
                // Append up to 50,000 bytes more before each write.
                let more = (sent_data.len() - fed).min(50_000);
                queue.extend_from_slice(&sent_data[fed..fed + more]);
                fed += more;
                let n = std::future::poll_fn(|cx| cw.poll_write_queue(cx, &mut queue[sent..]))
                    .await
                    .unwrap();
                assert!(n > 0 && !cw.has_backlog());
                sent += n;
            }
            cw.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        let mut chunk = [0u8; 7000];
        loop {
            // A slow reader: the sender's socket fills.
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
            let n = sr.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        writer.await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "the bytes differ");
    }

    /// An authentic frame with nothing in it is an error, not the end of
    /// the stream (read as zero bytes, it once passed for a clean close).
    #[tokio::test]
    async fn an_empty_frame_is_an_error_not_a_clean_end() {
        let key = SwarmSecret::generate().unwrap().swarm_key(&HASH);
        let (client, server) = pair(&key, &key).await;
        let ((_cr, mut cw), (mut sr, _sw)) = (client.unwrap(), server.unwrap());
        let mut frame = vec![0u8; 2 + TAG];
        let n = cw.cipher.seal(&[], &mut frame[2..]).unwrap();
        frame[..2].copy_from_slice(&(n as u16).to_be_bytes());
        cw.inner.write_all(&frame[..2 + n]).await.unwrap();
        let mut got = [0u8; 16];
        let read = sr.read(&mut got).await;
        assert!(
            matches!(&read, Err(e) if e.kind() == io::ErrorKind::InvalidData),
            "{read:?}"
        );
    }

    #[tokio::test]
    async fn a_peer_with_another_secret_or_torrent_cannot_finish_the_handshake() {
        let secret = SwarmSecret::generate().unwrap();
        let other = SwarmSecret::generate().unwrap();
        let (client, server) = pair(&secret.swarm_key(&HASH), &other.swarm_key(&HASH)).await;
        assert!(client.is_err() && server.is_err());
        let (client, server) = pair(&secret.swarm_key(&HASH), &secret.swarm_key(&[8; 20])).await;
        assert!(client.is_err() && server.is_err());
    }

    /// Both ends of a handshake derive the same transport keys from
    /// Split() (the initiator's sending key is the responder's receiving
    /// key), and a frame opens only whole, unaltered and in its place.
    #[test]
    fn frames_open_under_the_peers_keys_and_tampering_is_caught() {
        let key = SwarmSecret::generate().unwrap().swarm_key(&HASH);
        let build = |initiator: bool| {
            let b = Builder::new(NOISE.parse().unwrap())
                .psk(0, &key.psk)
                .unwrap()
                .prologue(PROLOGUE)
                .unwrap();
            if initiator {
                b.build_initiator().unwrap()
            } else {
                b.build_responder().unwrap()
            }
        };
        let (mut i, mut r) = (build(true), build(false));
        let (mut m, mut p) = (vec![0u8; MAX_MESSAGE], vec![0u8; MAX_MESSAGE]);
        let n = i.write_message(&[], &mut m).unwrap();
        r.read_message(&m[..n], &mut p).unwrap();
        let n = r.write_message(&[], &mut m).unwrap();
        i.read_message(&m[..n], &mut p).unwrap();
        let (send, _) = i.dangerously_get_raw_split();
        let (theirs_receive, theirs_send) = r.dangerously_get_raw_split();
        assert_eq!(
            send, theirs_receive,
            "Split() gives both ends one key per direction"
        );
        assert_ne!(send, theirs_send);

        let mut sender = FrameCipher::new(&send);
        let mut receiver = FrameCipher::new(&theirs_receive);
        let text: Vec<u8> = (0..MAX_PLAIN).map(|k| (k % 251) as u8).collect();
        let mut frames: Vec<Vec<u8>> = [&text[..], b"second frame", b""]
            .iter()
            .map(|t| {
                let mut f = vec![0u8; t.len() + TAG];
                let n = sender.seal(t, &mut f).unwrap();
                assert_eq!(n, f.len());
                assert!(
                    t.len() < 16 || f[..t.len()] != t[..],
                    "sealed text is not the text"
                );
                f
            })
            .collect();
        // Integrity: a flipped bit fails to open, and so does a frame out
        // of order (a replayed or dropped frame shifts the nonce), a frame
        // under the other direction's key, and a frame shorter than a tag.
        let mut flipped = frames[0].clone();
        flipped[40] ^= 1;
        let err = FrameCipher::new(&send).open(&mut flipped).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            FrameCipher::new(&send)
                .open(&mut frames[1].clone())
                .is_err(),
            "frame 1 opened as frame 0"
        );
        assert!(FrameCipher::new(&theirs_send)
            .open(&mut frames[0].clone())
            .is_err());
        assert!(FrameCipher::new(&send).open(&mut [0u8; TAG - 1]).is_err());
        assert_eq!(receiver.open(&mut frames[0]).unwrap(), text.len());
        assert_eq!(&frames[0][..text.len()], &text[..]);
        assert_eq!(receiver.open(&mut frames[1]).unwrap(), 12);
        assert_eq!(&frames[1][..12], b"second frame");
        assert_eq!(receiver.open(&mut frames[2]).unwrap(), 0);
    }

    #[test]
    fn secrets_read_back_from_hex_and_never_print() {
        let s = SwarmSecret::generate().unwrap();
        assert_eq!(
            SwarmSecret::from_hex(&format!("{}\n", s.to_hex())).unwrap(),
            s
        );
        assert!(SwarmSecret::from_hex("abc").is_err());
        assert_eq!(format!("{s:?}"), "SwarmSecret(..)");
        assert_ne!(s.tracker_token(&HASH), s.tracker_token(&[8; 20]));
        assert!(
            tokens_match(b"abc", b"abc")
                && !tokens_match(b"abc", b"abd")
                && !tokens_match(b"ab", b"abc")
        );
    }
}
