//! The BitTorrent peer wire protocol (BEP 3) with the fast extension
//! (BEP 6) and the extension protocol's handshake (BEP 10). Lengths are
//! checked before anything is allocated: a peer that sends nonsense gets
//! an error, never a crash or a huge buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
/// The block size every client requests and serves.
pub const BLOCK: u32 = 16 * 1024;
/// Largest block we serve to a peer asking for more than 16 KiB.
pub const MAX_REQUEST: u32 = 128 * 1024;
/// Largest extension message accepted.
const MAX_EXTENDED: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

fn violation<T>(what: impl Into<String>) -> Result<T, WireError> {
    Err(WireError::Protocol(what.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRequest {
    pub piece: u32,
    pub offset: u32,
    pub length: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(Bytes),
    Request(BlockRequest),
    Piece {
        piece: u32,
        offset: u32,
        data: Bytes,
    },
    Cancel(BlockRequest),
    Port(u16),
    // BEP 6
    Suggest(u32),
    HaveAll,
    HaveNone,
    Reject(BlockRequest),
    AllowedFast(u32),
    // BEP 10
    Extended {
        id: u8,
        payload: Bytes,
    },
}

/// The 68-byte handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
}

impl Handshake {
    /// Ours: the fast extension and the extension protocol, nothing else
    /// (no DHT bit: there is no DHT in a datacenter deploy).
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20]) -> Self {
        let mut reserved = [0u8; 8];
        reserved[5] |= 0x10; // BEP 10
        reserved[7] |= 0x04; // BEP 6
        Handshake {
            reserved,
            info_hash,
            peer_id,
        }
    }

    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    pub fn supports_extended(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    pub fn to_bytes(&self) -> [u8; 68] {
        let mut out = [0u8; 68];
        out[0] = 19;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash);
        out[48..68].copy_from_slice(&self.peer_id);
        out
    }

    pub async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Handshake, WireError> {
        let mut buf = [0u8; 68];
        reader.read_exact(&mut buf).await?;
        if buf[0] != 19 || &buf[1..20] != PROTOCOL {
            return violation("not a BitTorrent handshake");
        }
        let mut h = Handshake {
            reserved: [0; 8],
            info_hash: [0; 20],
            peer_id: [0; 20],
        };
        h.reserved.copy_from_slice(&buf[20..28]);
        h.info_hash.copy_from_slice(&buf[28..48]);
        h.peer_id.copy_from_slice(&buf[48..68]);
        Ok(h)
    }
}

impl Message {
    /// Appends the message, length prefix included, to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let simple = |out: &mut BytesMut, id: u8| {
            out.put_u32(1);
            out.put_u8(id);
        };
        let block = |out: &mut BytesMut, id: u8, r: &BlockRequest| {
            out.put_u32(13);
            out.put_u8(id);
            out.put_u32(r.piece);
            out.put_u32(r.offset);
            out.put_u32(r.length);
        };
        match self {
            Message::KeepAlive => out.put_u32(0),
            Message::Choke => simple(out, 0),
            Message::Unchoke => simple(out, 1),
            Message::Interested => simple(out, 2),
            Message::NotInterested => simple(out, 3),
            Message::Have(p) => {
                out.put_u32(5);
                out.put_u8(4);
                out.put_u32(*p);
            }
            Message::Bitfield(bits) => {
                out.put_u32(1 + bits.len() as u32);
                out.put_u8(5);
                out.put_slice(bits);
            }
            Message::Request(r) => block(out, 6, r),
            Message::Piece {
                piece,
                offset,
                data,
            } => {
                Self::encode_piece_header(out, *piece, *offset, data.len() as u32);
                out.put_slice(data);
            }
            Message::Cancel(r) => block(out, 8, r),
            Message::Port(p) => {
                out.put_u32(3);
                out.put_u8(9);
                out.put_u16(*p);
            }
            Message::Suggest(p) => {
                out.put_u32(5);
                out.put_u8(0x0D);
                out.put_u32(*p);
            }
            Message::HaveAll => simple(out, 0x0E),
            Message::HaveNone => simple(out, 0x0F),
            Message::Reject(r) => block(out, 0x10, r),
            Message::AllowedFast(p) => {
                out.put_u32(5);
                out.put_u8(0x11);
                out.put_u32(*p);
            }
            Message::Extended { id, payload } => {
                out.put_u32(2 + payload.len() as u32);
                out.put_u8(20);
                out.put_u8(*id);
                out.put_slice(payload);
            }
        }
    }

    /// The 13 bytes before a block's data, for writing data without a copy.
    pub fn encode_piece_header(out: &mut BytesMut, piece: u32, offset: u32, len: u32) {
        out.put_u32(9 + len);
        out.put_u8(7);
        out.put_u32(piece);
        out.put_u32(offset);
    }
}

/// The longest message a peer may send for a torrent of `piece_count`
/// pieces: a bitfield, a block of at most MAX_REQUEST, a small extension.
pub fn max_message_len(piece_count: usize) -> usize {
    (1 + piece_count.div_ceil(8))
        .max(9 + MAX_REQUEST as usize)
        .max(2 + MAX_EXTENDED)
}

/// Takes one whole message off the front of `buf`, if it holds one. Block
/// data is not copied: it shares `buf`'s memory.
pub fn take_message(buf: &mut BytesMut, max_len: usize) -> Result<Option<Message>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max_len {
        return violation(format!("message of {len} bytes"));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(4 + len).freeze();
    frame.advance(4);
    if len == 0 {
        return Ok(Some(Message::KeepAlive));
    }
    parse(&mut frame).map(Some)
}

fn parse(body: &mut Bytes) -> Result<Message, WireError> {
    let id = body.get_u8();
    let need = |body: &Bytes, n: usize| {
        if body.len() == n {
            Ok(())
        } else {
            violation(format!(
                "message {id} with {} payload bytes, expected {n}",
                body.len()
            ))
        }
    };
    let block = |body: &mut Bytes| BlockRequest {
        piece: body.get_u32(),
        offset: body.get_u32(),
        length: body.get_u32(),
    };
    Ok(match id {
        0 => need(body, 0).map(|_| Message::Choke)?,
        1 => need(body, 0).map(|_| Message::Unchoke)?,
        2 => need(body, 0).map(|_| Message::Interested)?,
        3 => need(body, 0).map(|_| Message::NotInterested)?,
        4 => {
            need(body, 4)?;
            Message::Have(body.get_u32())
        }
        5 => Message::Bitfield(body.clone()),
        6 => {
            need(body, 12)?;
            Message::Request(block(body))
        }
        7 => {
            if body.len() < 8 {
                return violation("piece message without a header");
            }
            let piece = body.get_u32();
            let offset = body.get_u32();
            Message::Piece {
                piece,
                offset,
                data: body.clone(),
            }
        }
        8 => {
            need(body, 12)?;
            Message::Cancel(block(body))
        }
        9 => {
            need(body, 2)?;
            Message::Port(body.get_u16())
        }
        0x0D => {
            need(body, 4)?;
            Message::Suggest(body.get_u32())
        }
        0x0E => need(body, 0).map(|_| Message::HaveAll)?,
        0x0F => need(body, 0).map(|_| Message::HaveNone)?,
        0x10 => {
            need(body, 12)?;
            Message::Reject(block(body))
        }
        0x11 => {
            need(body, 4)?;
            Message::AllowedFast(body.get_u32())
        }
        20 => {
            if body.is_empty() {
                return violation("extended message without an id");
            }
            let id = body.get_u8();
            Message::Extended {
                id,
                payload: body.clone(),
            }
        }
        other => return violation(format!("unknown message id {other}")),
    })
}

/// Writes a handshake.
pub async fn write_handshake<W: AsyncWrite + Unpin>(
    w: &mut W,
    h: &Handshake,
) -> Result<(), WireError> {
    w.write_all(&h.to_bytes()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(msg: Message) -> Message {
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        let max = max_message_len(100);
        let out = take_message(&mut buf, max).unwrap().unwrap();
        assert!(buf.is_empty());
        out
    }

    fn parse_bytes(bytes: &[u8]) -> Result<Option<Message>, WireError> {
        take_message(&mut BytesMut::from(bytes), max_message_len(100))
    }

    #[test]
    fn every_message_round_trips() {
        let r = BlockRequest {
            piece: 3,
            offset: 16384,
            length: 16384,
        };
        for msg in [
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have(7),
            Message::Bitfield(Bytes::from_static(&[0xff, 0x80])),
            Message::Request(r),
            Message::Piece {
                piece: 1,
                offset: 0,
                data: Bytes::from(vec![9u8; 100]),
            },
            Message::Cancel(r),
            Message::Port(6881),
            Message::Suggest(2),
            Message::HaveAll,
            Message::HaveNone,
            Message::Reject(r),
            Message::AllowedFast(4),
            Message::Extended {
                id: 0,
                payload: Bytes::from_static(b"de"),
            },
        ] {
            assert_eq!(round_trip(msg.clone()), msg);
        }
    }

    #[test]
    fn takes_whole_messages_off_a_buffer() {
        let mut buf = BytesMut::new();
        Message::Have(3).encode(&mut buf);
        Message::Piece {
            piece: 1,
            offset: 0,
            data: Bytes::from(vec![7u8; 20]),
        }
        .encode(&mut buf);
        let whole = buf.clone();
        let mut partial = BytesMut::from(&whole[..whole.len() - 1]);
        assert_eq!(
            take_message(&mut partial, 100).unwrap(),
            Some(Message::Have(3))
        );
        assert_eq!(take_message(&mut partial, 100).unwrap(), None, "incomplete");
        assert_eq!(take_message(&mut buf, 100).unwrap(), Some(Message::Have(3)));
        assert!(matches!(
            take_message(&mut buf, 100).unwrap(),
            Some(Message::Piece { .. })
        ));
        assert!(buf.is_empty());
        let mut huge = BytesMut::from(&[0u8, 1, 0, 0, 7][..]);
        assert!(take_message(&mut huge, 100).is_err());
    }

    #[tokio::test]
    async fn refuses_oversized_and_malformed_messages() {
        assert!(matches!(
            parse_bytes(&[0xff, 0xff, 0xff, 0xff, 0]),
            Err(WireError::Protocol(_))
        ));
        assert!(
            matches!(
                parse_bytes(&[0, 0, 0, 2, 4, 1]),
                Err(WireError::Protocol(_))
            ),
            "short have"
        );
        assert!(
            matches!(parse_bytes(&[0, 0, 0, 1, 99]), Err(WireError::Protocol(_))),
            "unknown id"
        );
        assert!(
            matches!(parse_bytes(&[0, 0, 0, 9, 7]), Ok(None)),
            "truncated: waits for the rest"
        );
        let h = Handshake::new([1; 20], [2; 20]);
        assert!(h.supports_fast() && h.supports_extended());
        let mut bad = h.to_bytes();
        bad[3] = b'x';
        assert!(Handshake::read(&mut &bad[..]).await.is_err());
        assert_eq!(Handshake::read(&mut &h.to_bytes()[..]).await.unwrap(), h);
    }
}
