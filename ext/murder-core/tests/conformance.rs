//! What murder asks of other clients, and what it gives them: only what the
//! BEPs require. Scripted peers that do exactly that much, over real sockets.

mod common;
use common::wire_peer::{dial, scripted_peer, FAST, PLAIN};
use common::{assert_downloaded, local, random_file, torrent, untracked_download};

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use murder_core::bitfield::Bitfield;
use murder_core::session::{Role, SessionConfig, SessionRunner};
use murder_core::wire::{BlockRequest, Message, BLOCK};
use murder_core::Metainfo;
use sha1::Digest;

/// Rule C1 (a BEP 6 Reject gives the block back and keeps the connection):
/// a peer with the fast extension chokes us with requests outstanding and
/// rejects each of them, as libtorrent and aria2 do when they rotate their
/// unchoke slots, then unchokes and serves. One connection does it all.
#[test]
fn rule_c1_a_reject_keeps_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 1_000_000, 41);
    let meta = torrent(&data, "127.0.0.1:9", 32 * 1024);
    let bytes = Arc::new(std::fs::read(&data).unwrap());
    let piece_length = meta.piece_length;
    let (addr, connections) = scripted_peer(
        FAST,
        *b"-XX0001-chokerchoker",
        meta.piece_count(),
        move |mut r, mut w| {
            let bytes = bytes.clone();
            async move {
                if !w.send(&[Message::HaveAll, Message::Unchoke]).await {
                    return;
                }
                let mut rejected = false;
                while let Some(message) = r.next().await {
                    let Message::Request(req) = message else {
                        continue;
                    };
                    if !rejected {
                        // Choke with this request outstanding and reject it.
                        rejected = true;
                        if !w.send(&[Message::Choke, Message::Reject(req)]).await {
                            return;
                        }
                        // Requests already on their way are rejected too.
                        let until = Instant::now() + Duration::from_millis(200);
                        while Instant::now() < until {
                            match tokio::time::timeout(Duration::from_millis(20), r.next()).await {
                                Ok(Some(Message::Request(late))) => {
                                    let _ = w.send(&[Message::Reject(late)]).await;
                                }
                                Ok(None) => return,
                                _ => {}
                            }
                        }
                        if !w.send(&[Message::Unchoke]).await {
                            return;
                        }
                        continue;
                    }
                    let at = (req.piece as u64 * piece_length + req.offset as u64) as usize;
                    let block = Message::Piece {
                        piece: req.piece,
                        offset: req.offset,
                        data: Bytes::copy_from_slice(&bytes[at..at + req.length as usize]),
                    };
                    if !w.send(&[block]).await {
                        return;
                    }
                }
            }
        },
    );
    let dest = dir.path().join("out/release.tgz");
    let peer = untracked_download(&meta, &dest, vec![addr], local());
    assert_downloaded(&peer, 20, &dest, &data);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the connection was dropped and dialled again"
    );
}

/// A downloader that does only what BEP 3 requires of it: no fast or
/// extension protocol, no `have` to the seed, and requests sent in batches
/// on a timer (as Transmission does, once a second) rather than as blocks
/// arrive, at most MAX_OUTSTANDING blocks at a time. Returns the number
/// of timer ticks it needed; it checks every piece it receives. With
/// `skip_padding` it asks only for the data of a piece that ends in BEP 47
/// padding (the zeros after it need not be sent), as libtorrent and murder
/// do; without, for the whole piece, as a client that knows no BEP 47 does.
const MAX_OUTSTANDING: usize = 64;

async fn bep3_download(
    seed: std::net::SocketAddr,
    meta: Arc<Metainfo>,
    tick: Duration,
    skip_padding: bool,
) -> u32 {
    let count = meta.piece_count();
    let (mut r, mut w) = dial(
        seed,
        PLAIN,
        *b"-XX0001-bep3onlybep3",
        meta.info_hash(),
        count,
    )
    .await
    .expect("handshake");
    let layout = meta.layout();
    let mut shown = Bitfield::new(count);
    let mut requested: HashSet<(u32, u32)> = HashSet::new();
    let mut outstanding = 0usize;
    let wanted = |p: usize| {
        if skip_padding {
            layout.data_end(p)
        } else {
            layout.piece_range(p).1
        }
    };
    let mut received: Vec<Vec<u8>> = (0..count)
        .map(|p| vec![0; layout.piece_range(p).1 as usize])
        .collect();
    let mut got = vec![0u64; count];
    let mut done = 0;
    let mut unchoked = false;
    let mut interested = false;
    let mut ticks = 0u32;
    let mut timer = tokio::time::interval(tick);
    while done < count {
        tokio::select! {
            message = r.next() => match message.expect("the seed closed the connection") {
                Message::Bitfield(bits) => shown = Bitfield::from_bytes(&bits, count).expect("bitfield"),
                Message::Have(p) => { shown.set(p as usize); }
                Message::Unchoke => unchoked = true,
                Message::Choke => panic!("a seed that unchoked everyone choked us"),
                Message::Piece { piece, offset, data } => {
                    outstanding -= 1;
                    let buf = &mut received[piece as usize];
                    buf[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
                    got[piece as usize] += data.len() as u64;
                    if got[piece as usize] == wanted(piece as usize) {
                        let digest: [u8; 20] = sha1::Sha1::digest(&buf[..]).into();
                        assert_eq!(digest, meta.pieces[piece as usize], "piece {piece}");
                        done += 1;
                    }
                }
                _ => {}
            },
            _ = timer.tick() => {
                ticks += 1;
                if !interested && shown.count() > 0 {
                    interested = w.send(&[Message::Interested]).await;
                }
                if !unchoked { continue; }
                // Blocks of the pieces shown, not asked for yet, in one batch.
                let mut batch = Vec::new();
                'pieces: for p in shown.iter_ones() {
                    let len = wanted(p);
                    let mut offset = 0u64;
                    while offset < len {
                        if outstanding >= MAX_OUTSTANDING {
                            break 'pieces;
                        }
                        let length = (len - offset).min(BLOCK as u64) as u32;
                        if requested.insert((p as u32, offset as u32)) {
                            batch.push(Message::Request(BlockRequest { piece: p as u32, offset: offset as u32, length }));
                            outstanding += 1;
                        }
                        offset += length as u64;
                    }
                }
                assert!(w.send(&batch).await, "the seed closed the connection");
            }
        }
    }
    ticks
}

/// A seed of `data` that dials nobody and announces nowhere.
fn start_seed(meta: Arc<Metainfo>, data: std::path::PathBuf, steer: bool) -> SessionRunner {
    let config = SessionConfig {
        use_tracker: false,
        steer,
        ..local()
    };
    SessionRunner::start(meta, Role::Seed { data }, config).unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn seed_and_download(steer: bool) -> (u32, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 16 << 20, 43);
    let meta = torrent(&data, "127.0.0.1:9", 32 * 1024);
    let seed = start_seed(meta.clone(), data, steer);
    let runtime = current_thread();
    let started = Instant::now();
    let ticks = runtime.block_on(bep3_download(
        seed.local_addr(),
        meta,
        Duration::from_millis(50),
        false,
    ));
    (ticks, started.elapsed())
}

/// Rule C2 for a tree (a piece ending in padding is taken up once its data
/// is asked for): most pieces of an aligned tree of small files end in
/// BEP 47 padding, which clients do not ask for. A BEP 3 downloader that
/// skips padding and never sends `have` must get every piece of such a tree
/// from a steering seed; counting only requests for whole pieces, the seed
/// waited for a `have` after its first offers and the download stalled.
#[test]
fn rule_c2_a_piece_that_ends_in_padding_is_taken_once_its_data_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("release");
    let mut rng = fastrand::Rng::with_seed(53);
    for i in 0..200 {
        let len = rng.usize(1000..15000);
        let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let path = root.join(format!("lib/d{}/f{i}.rb", i % 7));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let mut opts = murder_core::CreateOptions::new("127.0.0.1:9");
    opts.align = true;
    opts.piece_length = Some(16 * 1024);
    let meta =
        Arc::new(murder_core::create_torrent(&root, &opts, &murder_core::Progress::new()).unwrap());
    let count = meta.piece_count();
    assert!(
        (0..count)
            .filter(|&p| meta.layout().data_end(p) < 16 * 1024)
            .count()
            > count / 2
    );
    let seed = start_seed(meta.clone(), root, true);
    let runtime = current_thread();
    let download = bep3_download(seed.local_addr(), meta, Duration::from_millis(5), true);
    let ticks = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), download).await })
        .expect("the download stalled: the seed offered nothing more");
    eprintln!("BEP 3 downloader skipping padding: {count} pieces in {ticks} ticks");
}

/// Rule C2 (a seed serves any BEP 3 client at the speed it asks for): the
/// BEP 3-only downloader takes no more timer ticks from a steering seed
/// than 1.2 times what it takes from a plain seed.
#[test]
fn rule_c2_a_bep3_only_client_gets_full_speed_from_a_steering_seed() {
    let (plain, plain_time) = seed_and_download(false);
    let (steered, steered_time) = seed_and_download(true);
    eprintln!("BEP 3-only client: plain seed {plain} ticks ({plain_time:?}), steering seed {steered} ticks ({steered_time:?})");
    assert!(
        steered as f64 <= 1.2 * plain as f64,
        "steering seed {steered} ticks against {plain} from a plain seed"
    );
}

/// Rule H1 (every verified piece is told to every connection within
/// HAVE_BATCH, batched or not): a partial seed shows and serves half the
/// pieces and then has nothing more to give, so the download stalls with
/// its last verdicts inside a batch that no later verdict closes. A
/// watcher connected to the downloader must still hear of every one.
#[test]
fn rule_h1_the_last_batch_of_haves_is_told_without_a_later_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 1 << 20, 47);
    let meta = torrent(&data, "127.0.0.1:9", 16 * 1024);
    let count = meta.piece_count();
    let mut half = Bitfield::new(count);
    (0..count / 2).for_each(|p| {
        half.set(p);
    });
    let bytes = Arc::new(std::fs::read(&data).unwrap());
    let shown = half.to_bytes();
    // The seed unchokes once the watcher has met the downloader, so that
    // every piece is told to the watcher as it verifies (not in a bitfield).
    let met = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seed_waits = met.clone();
    let (seed, _) = scripted_peer(
        PLAIN,
        *b"-XX0001-halfseedhalf",
        count,
        move |mut r, mut w| {
            let (bytes, shown, met) = (bytes.clone(), shown.clone(), seed_waits.clone());
            async move {
                if !w.send(&[Message::Bitfield(shown.into())]).await {
                    return;
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                while !met.load(Ordering::Relaxed) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if !w.send(&[Message::Unchoke]).await {
                    return;
                }
                while let Some(message) = r.next().await {
                    if let Message::Request(req) = message {
                        let at = (req.piece as usize) * 16 * 1024 + req.offset as usize;
                        let data = Bytes::copy_from_slice(&bytes[at..at + req.length as usize]);
                        let piece = Message::Piece {
                            piece: req.piece,
                            offset: req.offset,
                            data,
                        };
                        if !w.send(&[piece]).await {
                            return;
                        }
                    }
                }
            }
        },
    );
    let heard = Arc::new(std::sync::Mutex::new(Bitfield::new(count)));
    let haves = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (watcher_heard, watcher_haves) = (heard.clone(), haves.clone());
    let (watcher, _) = scripted_peer(PLAIN, *b"-XX0001-watcherwatch", count, move |mut r, w| {
        let (heard, haves, met) = (watcher_heard.clone(), watcher_haves.clone(), met.clone());
        async move {
            met.store(true, Ordering::Relaxed); // handshaken with the downloader
            let _open = w; // dropping the write half would end the connection
            while let Some(message) = r.next().await {
                // What the downloader held when we met comes as its bitfield.
                match message {
                    Message::Have(p) => {
                        haves.fetch_add(1, Ordering::Relaxed);
                        heard.lock().unwrap().set(p as usize);
                    }
                    Message::Bitfield(bits) => {
                        let bits = Bitfield::from_bytes(&bits, count).expect("bitfield");
                        let mut heard = heard.lock().unwrap();
                        bits.iter_ones().for_each(|p| {
                            heard.set(p);
                        });
                    }
                    _ => {}
                }
            }
        }
    });
    let dest = dir.path().join("out/release.tgz");
    let peer = untracked_download(&meta, &dest, vec![seed, watcher], local());
    let deadline = Instant::now() + Duration::from_secs(20);
    while peer.stats().pieces_have < count / 2 {
        assert!(
            Instant::now() < deadline,
            "the download stalled early: {:?}",
            peer.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The last verdict is in; the batch it opened closes within HAVE_BATCH.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        heard.lock().unwrap().iter_ones().collect::<Vec<_>>(),
        half.iter_ones().collect::<Vec<_>>()
    );
    // Pieces were told as they verified, not only in a late bitfield.
    assert!(
        haves.load(Ordering::Relaxed) > 0,
        "every piece came in the bitfield: the watcher met the downloader too late to show H1"
    );
    peer.stop();
}

/// Rule C4 (what a peer's messages may cost): a seed for a hostile peer.
fn seed_for_a_hostile_peer(dir: &std::path::Path) -> (SessionRunner, Arc<Metainfo>) {
    let data = dir.join("release.tgz");
    random_file(&data, 1_000_000, 44);
    let meta = torrent(&data, "127.0.0.1:9", 32 * 1024);
    (start_seed(meta.clone(), data, false), meta)
}

/// A hostile peer with the fast extension, connected to `seed`: it has
/// nothing and asked for the seed's pieces (Interested).
async fn hostile_peer(
    seed: &SessionRunner,
    meta: &Metainfo,
) -> (common::wire_peer::Reader, common::wire_peer::Writer) {
    let (r, mut w) = dial(
        seed.local_addr(),
        FAST,
        *b"-XX0001-hostilehosti",
        meta.info_hash(),
        meta.piece_count(),
    )
    .await
    .expect("handshake");
    assert!(w.send(&[Message::HaveNone, Message::Interested]).await);
    (r, w)
}

/// Whether a seed ends the connection within 3 s of a hostile peer's
/// `messages` (reading, once what it sent before is drained, ends).
fn messages_end_the_connection(messages: impl FnOnce(&Metainfo) -> Vec<Message>) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let (seed, meta) = seed_for_a_hostile_peer(dir.path());
    current_thread().block_on(async {
        let (mut r, mut w) = hostile_peer(&seed, &meta).await;
        assert!(w.send(&messages(&meta)).await);
        tokio::time::timeout(Duration::from_secs(3), async {
            while r.next().await.is_some() {}
        })
        .await
        .is_ok()
    })
}

/// Rule C4: a request for a piece the torrent does not have ends the
/// connection (it was answered with a Reject, 17 bytes queued per 17-byte
/// request, without end).
#[test]
fn rule_c4_a_request_outside_the_torrent_ends_the_connection() {
    assert!(messages_end_the_connection(|meta| vec![Message::Request(
        BlockRequest {
            piece: meta.piece_count() as u32 + 7,
            offset: 0,
            length: BLOCK as u32,
        }
    )]));
}

/// Rule C4: bitfields (or have all / have none) past the few real
/// clients send end the connection: each one costs the seed a pass over
/// every piece, and a peer could send them back to back. (The hostile
/// peer sent one already; aria2 sends two.)
#[test]
fn rule_c4_bitfields_past_a_few_end_the_connection() {
    assert!(!messages_end_the_connection(|_| vec![Message::HaveNone; 3]));
    assert!(messages_end_the_connection(|_| vec![Message::HaveNone; 4]));
}

/// Rule C4: a peer that keeps asking and never reads what it is sent is
/// dropped once the seed holds `MAX_UNSENT` for it: before, each request
/// past the upload queue's limit queued a 17-byte Reject, and the seed's
/// buffer grew for as long as the peer kept writing.
#[test]
fn rule_c4_a_peer_that_asks_without_reading_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (seed, meta) = seed_for_a_hostile_peer(dir.path());
    current_thread().block_on(async {
        let (_r, mut w) = hostile_peer(&seed, &meta).await;
        let ask = BlockRequest {
            piece: 0,
            offset: 0,
            length: BLOCK as u32,
        };
        // 4,096 requests a round, 68 KiB; 500 rounds would queue 34 MiB.
        let round: Vec<Message> = (0..4096).map(|_| Message::Request(ask)).collect();
        let mut rounds = 0;
        // A seed that stops reading without closing fails the test, not hangs it.
        while rounds < 500 {
            match tokio::time::timeout(Duration::from_secs(30), w.send(&round)).await {
                Ok(true) => rounds += 1,
                Ok(false) => break,
                Err(_) => panic!("the seed neither read nor closed for 30 s"),
            }
        }
        assert!(
            rounds < 500,
            "the seed took 500 rounds of requests from a peer that reads nothing"
        );
    });
}

/// Rule T2 (a downloader waits in line for a turn only while it wants
/// pieces): a peer that is offered pieces and never asks for them (hostile,
/// or a client that asks on a slow timer) came round to the head of the
/// line with its window full. Only the head may take a turn, and it never
/// asked again, so the seed offered nothing more to anyone and every
/// downloader stalled.
#[test]
fn rule_t2_a_peer_that_takes_no_offers_holds_no_place_in_line() {
    use murder_core::session::State;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 24 << 20, 77);
    // A tracker, so that the downloaders find each other; one-piece
    // turns: each offer ends a turn while others wait.
    let tracker = common::quick_tracker("127.0.0.1:0".parse().unwrap());
    let meta = torrent(&data, &tracker.local_addr().to_string(), 256 << 10);
    tracker.tracker().allow_torrent(&meta);
    let seed = SessionRunner::start(
        meta.clone(),
        Role::Seed { data },
        SessionConfig {
            upload_limit: Some(8 << 20), // busy: every turn is taken
            ..local()
        },
    )
    .unwrap();
    let downloaders: Vec<SessionRunner> = (0..9)
        .map(|i| {
            let dest = dir.path().join(format!("d{i}/release.tgz"));
            SessionRunner::start(meta.clone(), Role::Download { dest }, local()).unwrap()
        })
        .collect();
    // The idler comes once the turns are taken, so it waits in line.
    std::thread::sleep(Duration::from_millis(300));
    let (seed_addr, info_hash, pieces) = (seed.local_addr(), meta.info_hash(), meta.piece_count());
    // Offers the idler received (a `have` or a bitfield each): none would
    // mean it never took a turn, and the test showed nothing.
    let offers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let idler_offers = offers.clone();
    std::thread::spawn(move || {
        current_thread().block_on(async move {
            let id = *b"-XX0001-idleridlerid";
            let (mut r, mut w) = dial(seed_addr, FAST, id, info_hash, pieces)
                .await
                .expect("the idler could not connect to the seed");
            if !w.send(&[Message::HaveNone, Message::Interested]).await {
                return;
            }
            // Reads what it is offered and never asks; stays connected.
            let deadline = Instant::now() + Duration::from_secs(40);
            while Instant::now() < deadline {
                match tokio::time::timeout(Duration::from_secs(5), r.next()).await {
                    Ok(None) => break,
                    Ok(Some(Message::Have(_) | Message::Bitfield(_))) => {
                        idler_offers.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(_)) => {}
                    Err(_) if !w.send(&[Message::KeepAlive]).await => break,
                    Err(_) => {}
                }
            }
        })
    });
    for (i, d) in downloaders.iter().enumerate() {
        assert_eq!(
            d.wait_done(Duration::from_secs(30)),
            State::Complete,
            "downloader {i}: {:?}",
            d.stats()
        );
    }
    assert!(
        offers.load(Ordering::Relaxed) > 0,
        "the idler was never offered a piece: it never reached a turn"
    );
}
