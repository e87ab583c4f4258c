//! Closed swarms (see src/secure.rs) and several trackers (BEP 12), between
//! real sessions on 127.0.0.1.
//!
//! Rules checked (src/session/STATE.md, "Closed swarms and trackers"): X1 a peer without the deploy's secret gets no torrent
//! byte, not even a handshake; X2 the tracker answers a closed torrent only
//! to announces with its token and shows it only to holders; X3 holders of
//! the secret complete; X4 a torrent's dead first tracker does not stop a
//! download that another tracker serves.

mod common;
use common::{local, quick_tracker, random_file, torrent, untracked_download};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use murder_core::secure::SwarmSecret;
use murder_core::session::{Role, SessionConfig, SessionRunner, State};
use murder_core::tracker::Viewer;
use murder_core::{create_torrent, CreateOptions, Progress};

/// What a standard BitTorrent client gets from `addr` when it knows the
/// info-hash: handshake, interested, a request for the first block. Returns
/// every byte the other side sent.
fn standard_client_probe(addr: std::net::SocketAddr, info_hash: [u8; 20]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut hello = vec![19u8];
    hello.extend_from_slice(b"BitTorrent protocol");
    hello.extend_from_slice(&[0; 8]);
    hello.extend_from_slice(&info_hash);
    hello.extend_from_slice(b"-XX0001-outsider0000");
    hello.extend_from_slice(&[0, 0, 0, 1, 2]); // interested
    hello.extend_from_slice(&[0, 0, 0, 13, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0]); // request
    let _ = s.write_all(&hello);
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

#[test]
fn rule_x1_x2_x3_an_outsider_gets_nothing_and_holders_complete() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = quick_tracker("127.0.0.1:0".parse().unwrap());
    let data = dir.path().join("release.tgz");
    random_file(&data, 2_000_000, 3);
    let meta = torrent(&data, &tracker.local_addr().to_string(), 64 * 1024);
    let secret = SwarmSecret::generate().unwrap();
    tracker.tracker().allow_closed(&meta, &secret);
    let closed = || SessionConfig {
        secret: Some(secret.clone()),
        ..local()
    };
    let seed =
        SessionRunner::start(meta.clone(), Role::Seed { data: data.clone() }, closed()).unwrap();

    // The probe is a working client: an open seed of the same data sends it
    // the block it asked for.
    let open_seed = SessionRunner::start(
        meta.clone(),
        Role::Seed { data: data.clone() },
        SessionConfig {
            use_tracker: false,
            steer: false,
            ..local()
        },
    )
    .unwrap();
    let seen = standard_client_probe(open_seed.local_addr(), meta.info_hash());
    assert!(
        seen.len() > 16 * 1024,
        "the open seed sent {} bytes",
        seen.len()
    );
    drop(open_seed);

    // X1: even knowing the info-hash and the seed's port.
    let seen = standard_client_probe(seed.local_addr(), meta.info_hash());
    assert!(seen.is_empty(), "an outsider got {} bytes", seen.len());
    // X1: a murder peer with another secret, pointed at the seed, gets none.
    let other = untracked_download(
        &meta,
        &dir.path().join("other/release.tgz"),
        vec![seed.local_addr()],
        SessionConfig {
            secret: Some(SwarmSecret::generate().unwrap()),
            ..local()
        },
    );

    // X3: holders complete through the tracker.
    let dest = dir.path().join("in/release.tgz");
    let peer = SessionRunner::start(
        meta.clone(),
        Role::Download { dest: dest.clone() },
        closed(),
    )
    .unwrap();
    assert_eq!(peer.wait_done(Duration::from_secs(30)), State::Complete);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&data).unwrap());
    let stats = other.stats();
    assert_eq!((stats.downloaded, stats.pieces_have), (0, 0), "{stats:?}");
    drop(other);

    // X2: outsiders see nothing of it; a holder of the token sees it.
    let t = tracker.tracker();
    assert!(t.stats_for(Viewer::Holder(None)).torrents.is_empty());
    assert!(t
        .stats_for(Viewer::Holder(Some(b"guess")))
        .torrents
        .is_empty());
    let token = secret.tracker_token(&meta.info_hash());
    let shown = || t.stats_for(Viewer::Holder(Some(token.as_bytes())));
    assert_eq!(shown().torrents.len(), 1);
    // The holder's `completed` announce follows its completion.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while shown().torrents[0].seeds < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(shown().torrents[0].seeds, 2);
    drop((peer, seed));
}

#[test]
fn rule_x4_a_dead_first_tracker_does_not_stop_a_download() {
    let dir = tempfile::tempdir().unwrap();
    let live = quick_tracker("127.0.0.1:0".parse().unwrap());
    // A port nothing listens on: the first tracker of the torrent is down.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let data = dir.path().join("release.tgz");
    random_file(&data, 1_000_000, 4);
    let mut opts = CreateOptions::new(dead_addr.to_string());
    opts.more_trackers = vec![live.local_addr().to_string()];
    opts.piece_length = Some(64 * 1024);
    let meta = std::sync::Arc::new(create_torrent(&data, &opts, &Progress::new()).unwrap());
    assert_eq!(meta.trackers().len(), 2);
    let reread = murder_core::Metainfo::from_bytes(&meta.to_bytes()).unwrap();
    assert_eq!(reread.trackers(), meta.trackers());
    assert_eq!(reread.info_hash(), meta.info_hash());
    live.tracker().allow_torrent(&meta);
    let _seed =
        SessionRunner::start(meta.clone(), Role::Seed { data: data.clone() }, local()).unwrap();
    let dest = dir.path().join("in/release.tgz");
    let peer =
        SessionRunner::start(meta.clone(), Role::Download { dest: dest.clone() }, local()).unwrap();
    assert_eq!(peer.wait_done(Duration::from_secs(30)), State::Complete);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&data).unwrap());
}
