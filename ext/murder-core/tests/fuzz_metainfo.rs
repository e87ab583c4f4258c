//! Property tests that throw arbitrary and mutated input at the .torrent
//! parser: it must never panic, and whatever it accepts must be safe and
//! round-trip with the same info-hash. The suite runs a few thousand cases;
//! for a long run: `PROPTEST_CASES=2000000 cargo test --release -p murder-core --test fuzz_metainfo`.

mod common;

use murder_core::Metainfo;
use proptest::prelude::*;

/// A valid multi-file torrent to mutate.
fn seed_torrent() -> Vec<u8> {
    let mut v = b"d8:announce22:http://t:8998/announce4:infod5:filesld6:lengthi5e4:pathl1:a1:beed4:attr1:p6:lengthi3e4:pathl4:.pad1:3eed6:lengthi40000e4:pathl1:ceee4:name3:rel12:piece lengthi16384e6:pieces60:".to_vec();
    v.extend_from_slice(&[9u8; 60]);
    v.extend_from_slice(b"7:privatei1eee");
    v
}

/// Arbitrary bencode, biased towards the shapes and keys of a torrent.
fn bencode() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        Just(b"info".to_vec()),
        Just(b"name".to_vec()),
        Just(b"length".to_vec()),
        Just(b"files".to_vec()),
        Just(b"path".to_vec()),
        Just(b"pieces".to_vec()),
        Just(b"piece length".to_vec()),
        Just(b"private".to_vec()),
        Just(b"attr".to_vec()),
        prop::collection::vec(any::<u8>(), 0..6),
    ];
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| format!("i{n}e").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..48).prop_map(|s| {
            let mut v = format!("{}:", s.len()).into_bytes();
            v.extend(s);
            v
        }),
        Just(b"2:..".to_vec()),
        Just(b"1:/".to_vec()),
        Just(b"0:".to_vec()),
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(|items| {
                let mut v = vec![b'l'];
                items.into_iter().for_each(|i| v.extend(i));
                v.push(b'e');
                v
            }),
            prop::collection::btree_map(key.clone(), inner, 0..8).prop_map(|items| {
                let mut v = vec![b'd'];
                for (k, val) in items {
                    v.extend(format!("{}:", k.len()).into_bytes());
                    v.extend(k);
                    v.extend(val);
                }
                v.push(b'e');
                v
            }),
        ]
    })
}

fn check(bytes: &[u8]) {
    if let Ok(m) = Metainfo::from_bytes(bytes) {
        assert!(m.total_length() > 0);
        assert_eq!(m.layout().piece_count(), m.piece_count());
        for f in &m.files {
            for c in &f.path {
                assert!(!c.is_empty() && c != ".." && c != "." && !c.contains('/'));
            }
        }
        let again = Metainfo::from_bytes(&m.to_bytes()).expect("own output parses");
        assert_eq!(again.info_hash(), m.info_hash());
    }
}

proptest! {
    #![proptest_config(common::proptest_config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    #[test]
    fn arbitrary_bencode_never_panics(bytes in bencode()) {
        check(&bytes);
        let mut wrapped = b"d4:info".to_vec();
        wrapped.extend(&bytes);
        wrapped.push(b'e');
        check(&wrapped);
    }

    #[test]
    fn mutated_torrents_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6)
    ) {
        let mut bytes = seed_torrent();
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
            if bytes.is_empty() { break; }
        }
        check(&bytes);
    }
}

#[test]
fn the_seed_is_valid() {
    let m = Metainfo::from_bytes(&seed_torrent()).unwrap();
    assert_eq!(m.files.len(), 3);
    assert!(m.files[1].pad && m.private);
}

/// A .torrent path that is a stream (a FIFO, `<(…)`, a link to /dev/zero)
/// is read only up to the most a torrent may have: `load` read to the end,
/// so a stream without one took all the memory there was.
#[test]
fn loading_a_stream_reads_no_more_than_a_torrent_may_have() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("endless.torrent");
    common::mkfifo(&path);
    // Four times the limit, unless the reader goes away first.
    let limit = murder_core::metainfo::MAX_TORRENT_BYTES;
    let writer_path = path.clone();
    let writer = std::thread::spawn(move || {
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(&writer_path)
            .unwrap();
        let chunk = vec![b'd'; 1 << 20];
        let mut written = 0;
        while written < 4 * limit && fifo.write_all(&chunk).is_ok() {
            written += chunk.len();
        }
        written
    });
    let err = Metainfo::load(&path).unwrap_err().to_string();
    assert!(err.contains("more than the"), "{err}");
    let written = writer.join().unwrap();
    assert!(
        written < 2 * limit,
        "the loader read {written} bytes of a stream whose limit is {limit}"
    );
}
