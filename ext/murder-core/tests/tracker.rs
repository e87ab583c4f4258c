//! The tracker over real sockets on 127.0.0.1: the protocol, the allow-list,
//! and hostile clients.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use murder_core::tracker::{TrackerConfig, TrackerServer};

const HASH: &str = "0123456789abcdef0123456789abcdef01234567";

fn start(config: TrackerConfig) -> TrackerServer {
    let server = TrackerServer::start("127.0.0.1:0".parse().unwrap(), config).unwrap();
    server.tracker().allow_hex(HASH).unwrap();
    server
}

fn escaped(hex_hash: &str) -> String {
    hex::decode(hex_hash)
        .unwrap()
        .iter()
        .map(|b| format!("%{b:02X}"))
        .collect()
}

fn announce_query(hash: &str, peer: u8, port: u16, left: u64, extra: &str) -> String {
    format!(
        "/announce?info_hash={}&peer_id=-MU0100-{:012}&port={port}&uploaded=0&downloaded=0&left={left}{extra}",
        escaped(hash),
        peer
    )
}

/// One GET over a fresh connection; the whole response (head and body).
fn get(addr: SocketAddr, target: &str) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    (
        String::from_utf8_lossy(&raw[..split]).into_owned(),
        raw[split + 4..].to_vec(),
    )
}

fn body(addr: SocketAddr, target: &str) -> Vec<u8> {
    get(addr, target).1
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn announces_hand_out_peers_compact_and_as_dicts() {
    let server = start(TrackerConfig::default());
    let addr = server.local_addr();
    let seed = body(
        addr,
        &announce_query(HASH, 1, 7001, 0, "&event=started&ip=10.0.0.1"),
    );
    assert_eq!(
        seed,
        b"d8:completei1e10:incompletei0e8:intervali15e12:min intervali8e5:peers0:e"
    );
    let leech = body(addr, &announce_query(HASH, 2, 7002, 5, "&event=started"));
    // The seed at 10.0.0.1:7001 (0x1B59), compact.
    assert!(
        contains(&leech, b"5:peers6:\x0a\x00\x00\x01\x1b\x59"),
        "{leech:?}"
    );
    let dicts = body(addr, &announce_query(HASH, 3, 7003, 5, "&compact=0"));
    assert!(
        contains(
            &dicts,
            b"d2:ip8:10.0.0.17:peer id20:-MU0100-0000000000014:porti7001ee"
        ),
        "{}",
        String::from_utf8_lossy(&dicts)
    );
    assert!(contains(
        &dicts,
        b"d2:ip9:127.0.0.17:peer id20:-MU0100-0000000000024:porti7002ee"
    ));
    assert!(
        !contains(&dicts, b"-MU0100-000000000003"),
        "never the asking peer"
    );
    let v6 = body(addr, &announce_query(HASH, 4, 7004, 0, "&ip=%3A%3A1"));
    assert!(contains(&v6, b"5:peers"));
    let other = body(addr, &announce_query(HASH, 5, 7005, 5, ""));
    assert!(
        contains(
            &other,
            b"6:peers618:\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01\x1b\x5c"
        ),
        "{other:?}"
    );
    let scrape = body(addr, &format!("/scrape?info_hash={}", escaped(HASH)));
    let key = [b"d5:filesd20:".as_slice(), &hex::decode(HASH).unwrap()].concat();
    assert!(scrape.starts_with(&key));
    assert!(
        contains(&scrape, b"d8:completei2e10:downloadedi0e10:incompletei3ee"),
        "{}",
        String::from_utf8_lossy(&scrape)
    );
}

#[test]
fn numwant_is_honoured_and_capped() {
    let server = start(TrackerConfig {
        max_numwant: 5,
        ..TrackerConfig::default()
    });
    let addr = server.local_addr();
    for peer in 0..12 {
        body(addr, &announce_query(HASH, peer, 8000 + peer as u16, 1, ""));
    }
    let three = body(addr, &announce_query(HASH, 0, 8000, 1, "&numwant=3"));
    assert!(contains(&three, b"5:peers18:"));
    let huge = body(
        addr,
        &announce_query(HASH, 0, 8000, 1, "&numwant=99999999999999999999"),
    );
    assert!(
        contains(&huge, b"failure reason"),
        "absurd numwant is refused"
    );
    let many = body(addr, &announce_query(HASH, 0, 8000, 1, "&numwant=100000"));
    assert!(contains(&many, b"5:peers30:"), "capped at 5 peers");
}

/// `left` is whatever a client says: the stats add them up saturating (an
/// overflow panicked a debug build and wrapped to a small number in release).
#[test]
fn absurd_left_values_saturate_in_the_stats() {
    let server = start(TrackerConfig::default());
    let addr = server.local_addr();
    for peer in 0..2 {
        body(
            addr,
            &announce_query(HASH, peer, 7100 + peer as u16, u64::MAX - 1, ""),
        );
    }
    let stats = server.tracker().stats();
    let t = stats.torrents.iter().find(|t| t.info_hash == HASH).unwrap();
    assert_eq!(t.bytes_left, u64::MAX);
    // And /metrics says so without wrapping to a negative count.
    let metrics = String::from_utf8(body(addr, "/metrics")).unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("murder_tracker_left_bytes{"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.ends_with(&format!(" {}", i64::MAX)), "{line}");
}

#[test]
fn unknown_torrents_get_a_failure_and_stay_out_of_stats() {
    let server = start(TrackerConfig::default());
    let addr = server.local_addr();
    let other = "fedcba9876543210fedcba9876543210fedcba98";
    let reply = body(addr, &announce_query(other, 1, 7001, 0, "&event=started"));
    assert_eq!(
        reply,
        b"d14:failure reason35:torrent not allowed on this trackere"
    );
    let stats = String::from_utf8(body(addr, "/stats.json")).unwrap();
    assert!(stats.contains(HASH) && !stats.contains(other), "{stats}");
    let scrape = body(addr, &format!("/scrape?info_hash={}", escaped(other)));
    assert_eq!(scrape, b"d5:filesdee");
}

#[test]
fn malformed_requests_get_failure_reasons() {
    let server = start(TrackerConfig::default());
    let addr = server.local_addr();
    for (target, reason) in [
        ("/announce".to_string(), "missing info_hash"),
        (
            "/announce?info_hash=abc&peer_id=x&port=1&left=0".to_string(),
            "info_hash must be 20 bytes, got 3",
        ),
        (
            announce_query(HASH, 1, 7001, 0, "&port=http"),
            "port must be a non-negative integer",
        ),
        (
            announce_query(HASH, 1, 7001, 0, "&left=-5"),
            "left must be a non-negative integer",
        ),
        (
            announce_query(HASH, 1, 7001, 0, "&event=%00%ff"),
            "event must be started, completed, stopped or empty",
        ),
        (
            format!("/announce?{}", "x".repeat(5000)),
            "request URI too long",
        ),
        (
            "/scrape?info_hash=%00".to_string(),
            "info_hash must be 20 bytes, got 1",
        ),
    ] {
        let reply = String::from_utf8_lossy(&body(addr, &target)).into_owned();
        assert_eq!(
            reply,
            format!("d14:failure reason{}:{reason}e", reason.len()),
            "{target:.80}"
        );
    }
    let (head, _) = get(addr, "/nope");
    assert!(head.starts_with("HTTP/1.1 404"));
    let (head, page) = get(addr, "/");
    assert!(head.contains("text/html"));
    assert!(String::from_utf8(page)
        .unwrap()
        .contains("fetch(\"/stats.json\""));
    assert_eq!(body(addr, "/health"), b"ok\n");
}

/// Sends raw bytes and reads until the server answers or closes.
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

#[test]
fn garbage_and_oversized_heads_close_only_their_connection() {
    let server = start(TrackerConfig::default());
    let addr = server.local_addr();
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..200 {
        let junk: Vec<u8> = (0..rng.usize(1..2000)).map(|_| rng.u8(..)).collect();
        let reply = raw_exchange(addr, &junk);
        assert!(
            reply.is_empty() || reply.starts_with(b"HTTP/1.1 4"),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    let huge_header = format!("GET /health HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(100_000));
    let reply = raw_exchange(addr, huge_header.as_bytes());
    assert!(
        reply.is_empty() || reply.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&reply[..reply.len().min(100)])
    );
    let binary_target = raw_exchange(addr, b"GET /announce?\xff\x00 HTTP/1.1\r\n\r\n");
    assert!(binary_target.is_empty() || binary_target.starts_with(b"HTTP/1.1 400"));
    assert_eq!(body(addr, "/health"), b"ok\n");
}

/// A request target may hold UTF-8 beyond ASCII (httparse lets it through):
/// a multi-byte character where the `http://` prefix would end once
/// panicked the tracker's accept loop, and with it the whole tracker.
#[test]
fn a_non_ascii_target_is_answered_and_the_tracker_serves_on() {
    let server = start(TrackerConfig::default());
    let addr = server.local_addr();
    for target in [
        "/abcde\u{e9}",
        "/abcdef\u{e9}",
        "h\u{e9}",
        "http:/\u{e9}\u{e9}",
    ] {
        let reply = raw_exchange(addr, format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes());
        assert!(
            reply.starts_with(b"HTTP/1.1 4"),
            "{target}: {:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    assert_eq!(body(addr, "/health"), b"ok\n");
}

#[test]
fn slow_loris_clients_are_cut_off_and_others_are_served_meanwhile() {
    let server = start(TrackerConfig::default());
    let addr = server.local_addr();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    // One that sends nothing at all (the kernel holds it back a second,
    // TCP_DEFER_ACCEPT, then it gets the same head timeout).
    let mut silent = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    assert_eq!(body(addr, "/health"), b"ok\n", "others are served at once");
    assert!(started.elapsed() < Duration::from_secs(1));
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(
        !String::from_utf8_lossy(&rest).contains("ok"),
        "no answer to a head never finished"
    );
    silent
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "silent client held {waited:?}"
    );
    assert!(rest.is_empty(), "no answer to a client that asked nothing");
}

/// One client pipelining requests as fast as it can, reading every reply,
/// so that there is always more of its data to serve: others are served
/// meanwhile. The accept loop served a connection's ready requests inline
/// for as long as any were ready, and took no other client until it ran dry.
#[test]
fn a_client_that_pipelines_without_pause_does_not_hold_up_others() {
    let server = start(TrackerConfig::default());
    let addr = server.local_addr();
    let greedy = TcpStream::connect(addr).unwrap();
    let mut reader = greedy.try_clone().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    });
    let feed = {
        let stop = stop.clone();
        let mut writer = greedy.try_clone().unwrap();
        std::thread::spawn(move || {
            // Announces: each costs the tracker more than it costs to send.
            let one = format!(
                "GET {} HTTP/1.1\r\nHost: t\r\n\r\n",
                announce_query(HASH, 1, 6881, 10, "&compact=1")
            );
            let batch = one.repeat(4096).into_bytes();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if writer.write_all(&batch).is_err() {
                    break;
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(body(addr, "/health"), b"ok\n");
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = greedy.shutdown(std::net::Shutdown::Both);
    let _ = feed.join();
    let _ = drain.join();
    assert!(
        took < Duration::from_secs(1),
        "another client waited {took:?}"
    );
}

#[test]
fn connections_are_bounded() {
    let server = start(TrackerConfig {
        max_connections: 4,
        ..TrackerConfig::default()
    });
    let addr = server.local_addr();
    // Each holds a connection with half a request head (a client that sent
    // nothing at all is not even handed over by the kernel yet: the
    // listener defers accept until data arrives).
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut waiting = TcpStream::connect(addr).unwrap(); // sits in the backlog
    waiting
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        waiting.read(&mut buf).is_err(),
        "served beyond the connection limit"
    );
    drop(idle);
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = Vec::new();
    waiting.read_to_end(&mut reply).unwrap();
    assert!(String::from_utf8_lossy(&reply).ends_with("ok\n"));
}

#[test]
fn stopping_frees_the_port_and_several_trackers_run_at_once() {
    let mut a = start(TrackerConfig::default());
    let b = start(TrackerConfig::default());
    let port = a.local_addr();
    assert_ne!(port, b.local_addr());
    assert_eq!(body(b.local_addr(), "/health"), b"ok\n");
    a.stop().unwrap();
    assert!(!a.is_running());
    assert!(TcpStream::connect(port).is_err());
    TcpListener::bind(port).expect("port is free after stop");
    assert_eq!(body(b.local_addr(), "/health"), b"ok\n");
}

#[test]
fn silent_peers_expire() {
    let server = start(TrackerConfig {
        peer_timeout: Some(Duration::from_secs(1)),
        ..TrackerConfig::default()
    });
    let addr = server.local_addr();
    body(addr, &announce_query(HASH, 1, 7001, 0, ""));
    assert_eq!(server.tracker().stats().torrents[0].seeds, 1);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(server.tracker().stats().torrents[0].seeds, 0);
}

#[test]
fn the_allow_dir_is_reread_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, allow) = torrent_and_allow_dir(dir.path(), 5);
    let server = TrackerServer::start(
        "127.0.0.1:0".parse().unwrap(),
        TrackerConfig {
            allow_dir: Some(allow.clone()),
            ..TrackerConfig::default()
        },
    )
    .unwrap();
    let hash = torrent.info_hash();
    assert!(!server.tracker().is_allowed(&hash));
    torrent.write(allow.join("data.torrent")).unwrap();
    std::fs::write(allow.join("broken.torrent"), b"not bencode").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.tracker().is_allowed(&hash) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server.tracker().is_allowed(&hash),
        "picked up the new torrent"
    );
    assert_eq!(server.tracker().stats().torrents[0].name, "data.bin");
    std::fs::remove_file(allow.join("data.torrent")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.tracker().is_allowed(&hash) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !server.tracker().is_allowed(&hash),
        "dropped the removed torrent"
    );
}

/// A tree's pad files are in the torrent's length but no peer holds them:
/// a host that has nothing is 0 % done (its `left` is the data), and the
/// swarm's size is the data (the deployer's progress line and the
/// dashboard count from it).
#[test]
fn a_padded_trees_hosts_count_down_from_its_data_not_its_pads() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("release");
    std::fs::create_dir_all(tree.join("lib")).unwrap();
    std::fs::write(tree.join("lib/a.rb"), vec![b'a'; 1000]).unwrap();
    std::fs::write(tree.join("lib/b.rb"), vec![b'b'; 70_000]).unwrap();
    let mut options = murder_core::CreateOptions::new("127.0.0.1:8998");
    options.align = true;
    options.piece_length = Some(32 * 1024);
    let torrent =
        murder_core::create_torrent(&tree, &options, &murder_core::Progress::new()).unwrap();
    let data = 71_000;
    assert!(
        torrent.total_length() > data,
        "the pads count in the torrent's length"
    );
    let file = dir.path().join("release.torrent");
    torrent.write(&file).unwrap();
    let server = start(TrackerConfig::default());
    let hash = server.tracker().allow(file.to_str().unwrap()).unwrap();
    let hex_hash = hex::encode(hash);
    let addr = server.local_addr();
    body(addr, &announce_query(&hex_hash, 1, 7001, data, ""));
    body(addr, &announce_query(&hex_hash, 2, 7002, 0, ""));
    let stats = server.tracker().stats();
    let swarm = stats
        .torrents
        .iter()
        .find(|t| t.info_hash == hex_hash)
        .unwrap();
    assert_eq!(swarm.total_length, Some(torrent.total_length()));
    assert_eq!(swarm.data_length, Some(data));
    let done: Vec<_> = swarm.peers.iter().map(|p| p.percent_done).collect();
    assert_eq!(done, vec![Some(0.0), Some(100.0)]);
}

/// A torrent of a small file in `dir` (its bytes all `byte`), and an empty
/// allow directory beside it.
fn torrent_and_allow_dir(
    dir: &std::path::Path,
    byte: u8,
) -> (murder_core::Metainfo, std::path::PathBuf) {
    let data = dir.join("data.bin");
    std::fs::write(&data, vec![byte; 100_000]).unwrap();
    let torrent = murder_core::create_torrent(
        &data,
        &murder_core::CreateOptions::new("127.0.0.1:8998"),
        &murder_core::Progress::new(),
    )
    .unwrap();
    let allow = dir.join("allow");
    std::fs::create_dir(&allow).unwrap();
    (torrent, allow)
}

/// The allow directory holds only files: a FIFO (or a link to a device)
/// named like a torrent there is skipped. Opening it for reading waited for
/// a writer that never came, so the tracker never started (and a reload
/// would have stopped its housekeeping for good).
#[test]
fn the_allow_dir_skips_what_is_not_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, allow) = torrent_and_allow_dir(dir.path(), 6);
    torrent.write(allow.join("data.torrent")).unwrap();
    let stuck = allow.join("stuck.torrent");
    common::mkfifo(&stuck);
    let config = TrackerConfig {
        allow_dir: Some(allow.clone()),
        ..TrackerConfig::default()
    };
    let (tx, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(TrackerServer::start("127.0.0.1:0".parse().unwrap(), config));
    });
    let server = match started.recv_timeout(Duration::from_secs(5)) {
        Ok(server) => server.unwrap(),
        Err(_) => {
            // Let the stuck start go (a writer that closes at once).
            drop(std::fs::OpenOptions::new().write(true).open(&stuck));
            panic!("the tracker did not start within 5 s: it opened the FIFO");
        }
    };
    assert!(server.tracker().is_allowed(&torrent.info_hash()));
}
