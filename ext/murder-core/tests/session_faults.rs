//! Faults a deploy meets: a peer that serves corrupt data, and a seeder
//! that leaves as soon as the swarm holds every piece.

mod common;
use common::{
    assert_downloaded, local, random_file, torrent, tracked_release, untracked_download,
    untracked_seed,
};

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::wire_peer::{handshake_on, scripted_peer, FAST};
use murder_core::bitfield::Bitfield;
use murder_core::session::{Role, SessionConfig, SessionRunner, State};
use murder_core::wire::{BlockRequest, Message, BLOCK};
use murder_core::Metainfo;

/// A peer that claims every piece and answers every request with zeros.
/// Returns its address and a counter of the connections it was sent.
fn corrupt_peer(
    meta: Arc<Metainfo>,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    scripted_peer(
        FAST,
        *b"-XX0001-badbadbadbad",
        meta.piece_count(),
        |mut r, mut w| async move {
            if !w.send(&[Message::HaveAll, Message::Unchoke]).await {
                return;
            }
            while let Some(message) = r.next().await {
                if let Message::Request(req) = message {
                    let zeros = Message::Piece {
                        piece: req.piece,
                        offset: req.offset,
                        data: Bytes::from(vec![0u8; req.length as usize]),
                    };
                    if !w.send(&[zeros]).await {
                        return;
                    }
                }
            }
        },
    )
}

#[test]
fn a_peer_serving_corrupt_blocks_is_banned_and_the_download_completes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 2_000_000, 5);
    let meta = torrent(&data, "127.0.0.1:9", 64 * 1024);
    // The honest seed is slow, so the liar gets asked for plenty.
    let seed = untracked_seed(
        &meta,
        &data,
        SessionConfig {
            upload_limit: Some(1_000_000),
            ..local()
        },
    );
    let (liar, liar_connections) = corrupt_peer(meta.clone());
    let dest = dir.path().join("out/release.tgz");
    let peer = SessionRunner::start(
        meta.clone(),
        Role::Download { dest: dest.clone() },
        SessionConfig {
            use_tracker: false,
            peers: vec![liar, seed.local_addr()],
            ..local()
        },
    )
    .unwrap();
    assert_downloaded(&peer, 60, &dest, &data);
    let stats = peer.stats();
    assert_eq!(stats.banned_peers, 1, "{stats:?}");
    assert!(stats.failed_pieces >= 1, "{stats:?}");
    std::thread::sleep(Duration::from_secs(3));
    let reconnects = liar_connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        reconnects <= 2,
        "a banned peer is not dialled again ({reconnects} connections)"
    );
}

#[test]
fn the_swarm_finishes_after_the_seeder_leaves_once_every_piece_is_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    let (_tracker, meta) = tracked_release(&data, 6_000_000, 9);
    let seed = SessionRunner::start(
        meta.clone(),
        Role::Seed { data: data.clone() },
        SessionConfig {
            upload_limit: Some(4_000_000),
            ..local()
        },
    )
    .unwrap();
    let peers: Vec<_> = (0..3)
        .map(|i| {
            SessionRunner::start(
                meta.clone(),
                Role::Download {
                    dest: dir.path().join(format!("peer{i}/release.tgz")),
                },
                SessionConfig {
                    download_limit: Some(2_000_000),
                    ..local()
                },
            )
            .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seed.stats().distributed && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seed.stats().distributed, "{:?}", seed.stats());
    let sent = seed.stats().uploaded;
    seed.stop();
    let unfinished = peers
        .iter()
        .filter(|p| p.state() != State::Complete)
        .count();
    assert!(unfinished >= 1, "the seeder left before the swarm was done");
    for (i, p) in peers.iter().enumerate() {
        assert_eq!(
            p.wait_done(Duration::from_secs(60)),
            State::Complete,
            "peer {i}: {:?}",
            p.stats()
        );
        assert_eq!(
            std::fs::read(dir.path().join(format!("peer{i}/release.tgz"))).unwrap(),
            std::fs::read(&data).unwrap()
        );
    }
    eprintln!("seeder sent {sent} bytes of a {} byte file before leaving; {unfinished} peers unfinished then", meta.total_length());
}

/// Regression guard for swarm efficiency (counts bytes, not seconds): with
/// every link capped alike, the seeder sends little more than one copy —
/// the downloaders trade the rest among themselves.
#[test]
fn the_seeder_sends_about_one_copy_to_a_capped_swarm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    let size = 16 << 20;
    let (_tracker, meta) = tracked_release(&data, size, 12);
    let link = Some(8_000_000);
    let capped = || SessionConfig {
        upload_limit: link,
        download_limit: link,
        ..local()
    };
    let seed =
        SessionRunner::start(meta.clone(), Role::Seed { data: data.clone() }, capped()).unwrap();
    let peers: Vec<_> = (0..4)
        .map(|i| {
            let dest = dir.path().join(format!("peer{i}/release.tgz"));
            SessionRunner::start(meta.clone(), Role::Download { dest }, capped()).unwrap()
        })
        .collect();
    for (i, p) in peers.iter().enumerate() {
        assert_eq!(
            p.wait_done(Duration::from_secs(60)),
            State::Complete,
            "peer {i}: {:?}",
            p.stats()
        );
    }
    let sent = seed.stats().uploaded;
    let factor = sent as f64 / size as f64;
    eprintln!("seeder sent {factor:.2} copies to 4 capped peers");
    // Measured: 1.31–1.38 with steering, 1.71–1.75 without it.
    assert!(factor < 1.55, "the seeder sent {factor:.2} copies");
}

/// The watchdog (STATE.md, "What a watchdog decides"): a seeder that leaves
/// before the swarm holds every piece fails the downloads in seconds, with
/// the reason, instead of leaving them waiting.
#[test]
fn downloads_fail_soon_when_the_seeder_left_with_pieces_nobody_else_has() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    let (_tracker, meta) = tracked_release(&data, 4_000_000, 13);
    let seed = SessionRunner::start(
        meta.clone(),
        Role::Seed { data: data.clone() },
        SessionConfig {
            upload_limit: Some(500_000),
            ..local()
        },
    )
    .unwrap();
    let quick = SessionConfig {
        orphan_timeout: Duration::from_secs(2),
        ..local()
    };
    let peers: Vec<_> = (0..2)
        .map(|i| {
            let dest = dir.path().join(format!("peer{i}/release.tgz"));
            SessionRunner::start(meta.clone(), Role::Download { dest }, quick.clone()).unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while peers.iter().all(|p| p.stats().have_bytes == 0) {
        assert!(
            Instant::now() < deadline,
            "no peer verified a piece in 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    seed.stop();
    let stopped = Instant::now();
    for p in &peers {
        match p.wait_done(Duration::from_secs(30)) {
            State::Failed(reason) => {
                assert!(reason.contains("held by no connected peer"), "{reason}")
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "took {:?}",
        stopped.elapsed()
    );
    for i in 0..2 {
        assert!(!dir.path().join(format!("peer{i}/release.tgz")).exists());
    }
}

/// A download that receives nothing for its stall timeout fails, naming why.
#[test]
fn a_download_that_receives_nothing_fails_after_the_stall_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 100_000, 14);
    let meta = torrent(&data, "127.0.0.1:9", 32 * 1024);
    fails_on_its_stall_timeout(meta, &dir.path().join("out/release.tgz"), vec![]);
}

/// Downloads a file whose torrent names a tracker where nothing listens
/// (port 9 of loopback: connections are refused) with `config`, and waits
/// up to `within` for it to fail. Returns why, how long it took, and
/// whether anything was left at the destination.
fn fails_without_a_tracker(config: SessionConfig, within: Duration) -> (String, Duration, bool) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 100_000, 15);
    let meta = torrent(&data, "127.0.0.1:9", 32 * 1024);
    let dest = dir.path().join("out/release.tgz");
    let started = Instant::now();
    let peer = SessionRunner::start(meta, Role::Download { dest: dest.clone() }, config).unwrap();
    match peer.wait_done(within) {
        State::Failed(reason) => (reason, started.elapsed(), dest.exists()),
        other => panic!(
            "expected a failure within {} s, got {other:?} after {:.1} s {:?}",
            within.as_secs(),
            started.elapsed().as_secs_f64(),
            peer.stats()
        ),
    }
}

/// The watchdog's stall rule names the cause when it is the tracker: a host
/// that cannot reach it (a firewall, the wrong deployer address) learns of
/// no peer, and its error said only "nothing received (0 peers connected)".
#[test]
fn a_download_whose_tracker_never_answers_fails_naming_the_tracker() {
    let config = SessionConfig {
        stall_timeout: Duration::from_secs(2),
        ..local()
    };
    let (reason, _, _) = fails_without_a_tracker(config, Duration::from_secs(20));
    assert!(
        reason.contains("nothing received for 2 s (0 peers connected); no tracker answered: ")
            && reason.contains("http://127.0.0.1:9/announce"),
        "{reason}"
    );
}

/// Rule A1 (STATE.md, the watchdog): a download that no tracker ever
/// answered and that never had a peer fails on the tracker timeout (15 s by
/// default), not the stall timeout (60 s): a host behind a firewall that
/// drops the tracker's port held `cap deploy` for a minute before it said
/// so.
#[test]
fn rule_a1_a_download_no_tracker_ever_answered_fails_on_the_tracker_timeout() {
    let (reason, took, left) = fails_without_a_tracker(local(), Duration::from_secs(25));
    assert!(
        reason.contains("no tracker answered in 15 s and no peer connected: ")
            && reason.contains("http://127.0.0.1:9/announce"),
        "{reason}"
    );
    assert!(took < Duration::from_secs(20));
    assert!(!left);
}

/// Downloads `meta` to `dest` from `peers` with a stall timeout of 2 s, and
/// checks that it fails so, within 20 s.
fn fails_on_its_stall_timeout(
    meta: Arc<Metainfo>,
    dest: &std::path::Path,
    peers: Vec<std::net::SocketAddr>,
) {
    let peer = SessionRunner::start(
        meta,
        Role::Download {
            dest: dest.to_path_buf(),
        },
        SessionConfig {
            use_tracker: false,
            peers,
            stall_timeout: Duration::from_secs(2),
            ..local()
        },
    )
    .unwrap();
    match peer.wait_done(Duration::from_secs(20)) {
        State::Failed(reason) => assert!(reason.contains("nothing received for 2 s"), "{reason}"),
        other => panic!("expected a failure, got {other:?} {:?}", peer.stats()),
    }
}

/// The watchdog (STATE.md, "What the watchdog decides"): a download still
/// receiving bytes is not stuck. A steering seed shows a peer only the
/// pieces it offers, so it never counts as a seed; on a slow link one piece
/// takes longer than the orphan timeout, and the download must go on.
#[test]
fn a_slow_steering_seed_is_not_mistaken_for_a_seeder_that_left() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    // 32 pieces, a few on offer at a time (the rest held by no one), each
    // 0.33 s on the seed's link (longer than the orphan timeout), a block
    // every 0.08 s (well within it).
    random_file(&data, 2 * 1024 * 1024, 15);
    let meta = torrent(&data, "127.0.0.1:9", 64 * 1024);
    let seed = untracked_seed(
        &meta,
        &data,
        SessionConfig {
            upload_limit: Some(200_000),
            ..local()
        },
    );
    assert!(local().steer, "the default seed steers");
    let dest = dir.path().join("peer/release.tgz");
    let peer = untracked_download(
        &meta,
        &dest,
        vec![seed.local_addr()],
        SessionConfig {
            orphan_timeout: Duration::from_millis(250),
            ..local()
        },
    );
    assert_downloaded(&peer, 60, &dest, &data);
    seed.stop();
}

/// The watchdog's stall timeout counts payload we asked for or could use:
/// a peer that answers no request and sends one block over and over (a
/// duplicate each time after the first) kept the download "receiving", so
/// it never failed.
#[test]
fn a_peer_repeating_an_unrequested_block_does_not_hold_off_the_stall_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 100_000, 16);
    let meta = torrent(&data, "127.0.0.1:9", 32 * 1024);
    let first_block = Bytes::from(std::fs::read(&data).unwrap()[..16384].to_vec());
    let (repeater, _) = scripted_peer(
        FAST,
        *b"-XX0001-repeatrepeat",
        meta.piece_count(),
        move |_r, mut w| {
            let block = first_block.clone();
            async move {
                if !w.send(&[Message::HaveAll, Message::Unchoke]).await {
                    return;
                }
                loop {
                    let again = Message::Piece {
                        piece: 0,
                        offset: 0,
                        data: block.clone(),
                    };
                    if !w.send(&[again]).await {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        },
    );
    fails_on_its_stall_timeout(meta, &dir.path().join("out/release.tgz"), vec![repeater]);
}

/// Rule C5 (a peer that takes nothing we send for `SEND_STALL` is gone):
/// a downloader whose link went down had told the seed it holds a piece
/// the others lack, and left requests behind that the seed cannot send.
/// The seed counted it a holder until its idle timeout (120 s), and it
/// offers a piece that someone holds again only when idle, which the
/// stuck requests kept it from being: the other downloader got every piece
/// but that one and failed on its orphan timeout (a rake ship to farm
/// hosts failed so, once, when the test took one host's link down).
#[test]
fn rule_c5_a_holder_whose_link_died_gives_its_pieces_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 4 << 20, 91);
    let meta = torrent(&data, "127.0.0.1:9", 256 << 10);
    let seed = untracked_seed(&meta, &data, local());
    let (seed_addr, info_hash, pieces) = (seed.local_addr(), meta.info_hash(), meta.piece_count());
    let (ready_tx, ready) = std::sync::mpsc::channel::<u32>();
    let (done, done_rx) = std::sync::mpsc::channel::<()>();
    // The dead peer: a small receive window, so that what the seed sends
    // it stays in the seed's queue once it stops reading.
    let dead = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let held = runtime.block_on(async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let stream = socket.connect(seed_addr).await.unwrap();
            let (mut r, mut w) =
                handshake_on(stream, FAST, *b"-XX0001-deaddeaddead", info_hash, pieces)
                    .await
                    .expect("handshake");
            assert!(w.send(&[Message::HaveNone, Message::Interested]).await);
            let (mut offers, mut unchoked) = (None, false);
            while offers.is_none() || !unchoked {
                match r.next().await.expect("the seed hung up") {
                    Message::Bitfield(bits) => offers = Bitfield::from_bytes(&bits, pieces),
                    Message::Unchoke => unchoked = true,
                    _ => {}
                }
            }
            let offers: Vec<usize> = offers.unwrap().iter_ones().collect();
            assert!(offers.len() >= 2, "offered {offers:?}");
            // It tells the seed it holds the first piece offered, and asks
            // for 8 MiB of the second (far more than socket buffers take).
            let (held, asked) = (offers[0] as u32, offers[1] as u32);
            let ask = BlockRequest {
                piece: asked,
                offset: 0,
                length: BLOCK as u32,
            };
            let mut messages = vec![Message::Have(held)];
            messages.extend((0..512).map(|_| Message::Request(ask)));
            assert!(w.send(&messages).await);
            (held, r, w)
        });
        let (held, _r, _w) = held;
        ready_tx.send(held).unwrap();
        // Reads nothing more, and keeps the connection open.
        let _ = done_rx.recv_timeout(Duration::from_secs(60));
    });
    let held = ready
        .recv_timeout(Duration::from_secs(10))
        .expect("the dead peer set up");
    let dest = dir.path().join("peer/release.tgz");
    let peer = untracked_download(&meta, &dest, vec![seed_addr], local());
    assert_eq!(
        local().orphan_timeout,
        Duration::from_secs(10),
        "the default"
    );
    let started = Instant::now();
    assert_downloaded(&peer, 30, &dest, &data);
    eprintln!("piece {held} came back after {:?}", started.elapsed());
    done.send(()).unwrap();
    dead.join().unwrap();
    seed.stop();
}
