//! Property tests for the peer wire parser: whatever bytes a peer sends,
//! parsing ends in messages or an error, never a panic or a huge buffer.
//! Long run: `PROPTEST_CASES=2000000 cargo test --release -p murder-core --test fuzz_wire`.

mod common;

use bytes::BytesMut;
use murder_core::wire::{max_message_len, take_message, Message};
use proptest::prelude::*;

/// Parses everything in `bytes`; returns how many messages came out.
fn parse_all(bytes: &[u8], piece_count: usize) -> usize {
    let max = max_message_len(piece_count);
    let mut buf = BytesMut::from(bytes);
    let mut count = 0;
    while let Ok(Some(_)) = take_message(&mut buf, max) {
        count += 1;
        assert!(
            buf.capacity() <= bytes.len() + max + 4,
            "buffer grew beyond one message"
        );
    }
    count
}

proptest! {
    #![proptest_config(common::proptest_config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), pieces in 1usize..5000) {
        parse_all(&bytes, pieces);
    }

    #[test]
    fn framed_garbage_never_panics(frames in prop::collection::vec((0u8..30, prop::collection::vec(any::<u8>(), 0..40)), 0..20)) {
        let mut bytes = Vec::new();
        for (id, payload) in &frames {
            bytes.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
            bytes.push(*id);
            bytes.extend_from_slice(payload);
        }
        parse_all(&bytes, 100);
    }
}

#[test]
fn valid_messages_parse() {
    let mut buf = BytesMut::new();
    Message::Have(1).encode(&mut buf);
    Message::Unchoke.encode(&mut buf);
    assert_eq!(parse_all(&buf, 10), 2);
}
