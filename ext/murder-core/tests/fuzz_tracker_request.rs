//! Property tests for the tracker's query parser: arbitrary and mutated
//! query strings never panic, and what parses is well-formed.
//! Long run: `PROPTEST_CASES=2000000 cargo test --release -p murder-core --test fuzz_tracker_request`.

mod common;

use murder_core::tracker::request::{parse_announce, parse_scrape, MAX_SCRAPE_HASHES};
use proptest::prelude::*;

const GOOD: &str = "info_hash=%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A&peer_id=-MU0100-abcdefghijkl&port=6881&uploaded=0&downloaded=0&left=100&event=started&numwant=50&compact=1&ip=10.0.0.1";

fn pair() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("info_hash"),
        Just("peer_id"),
        Just("port"),
        Just("left"),
        Just("uploaded"),
        Just("downloaded"),
        Just("event"),
        Just("numwant"),
        Just("ip"),
        Just("compact"),
        Just("x"),
    ];
    let value = prop_oneof![
        "[0-9]{0,25}",
        "-?[0-9]{1,5}",
        "(%[0-9A-Fa-f]{2}){0,24}",
        "[ -~]{0,30}",
        Just("%".to_string()),
        Just("%zz".to_string()),
    ];
    (key, value).prop_map(|(k, v)| format!("{k}={v}"))
}

proptest! {
    #![proptest_config(common::proptest_config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_announce(&bytes);
        let _ = parse_scrape(&bytes);
    }

    #[test]
    fn structured_queries_never_panic(pairs in prop::collection::vec(pair(), 0..80)) {
        let query = pairs.join("&");
        if let Ok(a) = parse_announce(query.as_bytes()) {
            prop_assert!(a.port > 0);
        }
        if let Ok(h) = parse_scrape(query.as_bytes()) {
            prop_assert!(h.len() <= MAX_SCRAPE_HASHES);
        }
    }

    #[test]
    fn mutated_announces_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8)
    ) {
        let mut bytes = GOOD.as_bytes().to_vec();
        for (at, byte, kind) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        let _ = parse_announce(&bytes);
    }
}

#[test]
fn the_seed_query_parses() {
    assert!(parse_announce(GOOD.as_bytes()).is_ok());
}
