//! One peer connection: the wire protocol both ways in one task. It parses
//! messages, answers them, serves blocks, keeps a pipeline of requests,
//! writes the blocks it is the accepted writer of (rule B1 of STATE.md),
//! and follows the session's events. It ends on the session's cancellation.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bendy::decoding::{Decoder, Object};
use bendy::encoding::Encoder;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha1::Digest;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::broadcast;

use super::context::{Context, Event};
use super::link::{Reader, Writer};
use crate::bitfield::Bitfield;
use crate::picker::Accept;
use crate::wire::{
    max_message_len, take_message, BlockRequest, Handshake, Message, WireError, MAX_REQUEST,
};

/// Requests we advertise (BEP 10 `reqq`) and queue from one peer.
const MAX_QUEUED_UPLOADS: usize = 2048;
/// Blocks served per turn of the loop before looking at other events.
const UPLOADS_PER_TURN: usize = 4;
/// Blocks served ahead of the oldest queued request before it goes next.
const MAX_BYPASSES: usize = 32;
/// A peer silent this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
const KEEPALIVE: Duration = Duration::from_secs(60);
/// A peer whose socket takes nothing we send for this long, while we have
/// bytes for it, is gone (its link or host died) or reads nothing: its
/// connection ends, so the pieces it holds and its queue stop counting
/// (rule C5). Half the default orphan timeout: the pieces a dead holder
/// had must reach the others before they give up on them.
const SEND_STALL: Duration = Duration::from_secs(5);
/// Pipeline of a peer that stopped delivering, until it delivers again.
const SNUBBED_PIPELINE: usize = 4;
/// Requests kept in flight to a peer cover this many seconds at the rate it
/// delivers: enough to keep its link busy, few enough that a fresh piece
/// arrives soon after it is asked for (so it can be passed on) and that
/// endgame starts only at the very end of a download. It must exceed a
/// round trip, queues included, or a pipeline cannot grow past the rate it
/// measured: on the farm (round trips of 40–85 ms, 200 ms on its deep
/// setting) 0.2 s gave 1.18–1.34 × T* at 16 hosts, 0.3 s 1.12–1.18, 0.5 s
/// 1.14–1.23 and 1.0 s 1.19–1.22: requests beyond what a link takes wait
/// in its uploader's queue, ahead of the fresh pieces others ask for.
const QUEUE_SECONDS: f64 = 0.3;
/// The smallest pipeline, and the first one on a new connection (with 4,
/// 32 hosts at 50 Mbit/s took 1.25–1.34 × T* against 1.19–1.22 with 8).
const MIN_PIPELINE: usize = 8;
/// Pieces a steering seed offers a peer ahead of its requests (a peer takes
/// up a piece by asking for all of it, and is offered the next at once).
const OFFER_AHEAD: usize = 4;
/// A peer that leaves pieces on offer untaken for this long after its
/// queue ran dry asks in batches (on a timer, as Transmission does): its
/// window of offers doubles, so the seed never waits on its timer. Not for
/// murder's own peers: they ask for an offered piece as soon as it is
/// offered unless others are sending it already, and a larger window would
/// only promise pieces early and spoil the first pass.
const BATCH_GAP: Duration = Duration::from_millis(20);
/// How often a peer's delivery rate is measured.
const RATE_WINDOW: Duration = Duration::from_millis(200);
/// Bytes read from the socket at a time (fewer, larger reads).
const READ_BUFFER: usize = 256 * 1024;
/// More blocks are served only once less than this waits to be written: a
/// block in the out buffer is committed to its peer, while one still in the
/// queue can be passed by a rarer one (see `serve_uploads`).
const OUT_BUFFER: usize = 64 * 1024;
/// Bitfields (or have all / have none) a peer may send (rule C4).
const MAX_BITFIELDS: u32 = 4;
/// Unsent bytes we may hold for a peer (rule C4). Blocks are added only
/// while less than `OUT_BUFFER` waits, so only a peer that keeps asking and
/// does not read what it is sent (each request past the queue's limit
/// answered with a Reject) gets this far: it is dropped.
const MAX_UNSENT: usize = 2 << 20;
/// Unsent bytes a peer socket may hold (TCP_NOTSENT_LOWAT).
#[cfg(any(target_os = "linux", target_os = "android"))]
const NOTSENT_LOWAT: u32 = 64 * 1024;

/// Socket options for a peer connection: no Nagle delay (requests are
/// small and latency is what matters), and under a rate limit, socket
/// buffers the size of a capped link's queue.
pub(super) fn tune(stream: &TcpStream, ctx: &Context) {
    let _ = stream.set_nodelay(true);
    let socket = socket2::SockRef::from(stream);
    // Unsent bytes the kernel holds per socket: the rest waits in our
    // upload queue, where a rarer piece can still pass it.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = socket.set_tcp_notsent_lowat(NOTSENT_LOWAT);
    if let Some(limit) = &ctx.download_limit {
        let _ = socket.set_recv_buffer_size(limit.socket_buffer());
    }
    if let Some(limit) = &ctx.upload_limit {
        let _ = socket.set_send_buffer_size(limit.socket_buffer());
    }
}

fn violation<T>(what: impl Into<String>) -> Result<T, WireError> {
    Err(WireError::Protocol(what.into()))
}

struct Peer {
    ctx: Arc<Context>,
    key: u64,
    fast: bool,
    peer_has: Bitfield,
    /// Bumped when `peer_has` changes.
    has_version: u64,
    /// The picker epoch and `has_version` when a pick last came up short:
    /// until either moves, picking again would find nothing new.
    starved: Option<(u64, u64)>,
    sent_have: Bitfield,
    am_interested: bool,
    am_choking: bool,
    peer_choking: bool,
    outstanding: Vec<BlockRequest>,
    last_data: Instant,
    last_recv: Instant,
    last_sent: Instant,
    /// Block bytes received since `window_start`, and the smoothed rate
    /// (bytes per second) of earlier windows.
    received: u64,
    window_start: Instant,
    rate: f64,
    /// The shallowest pipeline for this connection (see `pipeline_floor`).
    min_depth: usize,
    their_reqq: usize,
    snubbed: bool,
    uploads: VecDeque<BlockRequest>,
    /// Blocks served ahead of `uploads[0]` so far (see `next_upload`).
    bypassed: usize,
    /// Bytes to write; `out[..sent]` are written already.
    out: BytesMut,
    sent: usize,
    /// A steering seed shows this peer only the pieces in `offered`, and
    /// offers more as soon as the peer has asked for all of one (`taken`),
    /// so its pipeline never waits for a `have` round trip.
    steering: bool,
    /// Piece bytes serialized into `out` and not yet written (a steering
    /// seed counts them as work still to do).
    unsent_piece_bytes: u64,
    offers_done: bool,
    offered: Bitfield,
    taken: Bitfield,
    requested: std::collections::HashMap<u32, u64>,
    /// Pieces kept on offer to this peer that it has not asked for yet.
    offer_window: usize,
    /// When its upload queue last ran dry while it had offers untaken.
    drained_with_offers: Option<Instant>,
    /// Bitfields (and have all / have none) it sent.
    bitfields: u32,
    /// Another client than murder (see BATCH_GAP).
    foreign: bool,
    /// This peer holds every piece, and is counted in `seeds_connected`.
    counted_seed: bool,
}

pub(super) async fn run(
    ctx: Arc<Context>,
    read_half: &mut Reader,
    write_half: &mut Writer,
    key: u64,
    theirs: Handshake,
) -> Result<(), WireError> {
    let piece_count = ctx.meta.piece_count();
    let now = Instant::now();
    let mut peer = Peer {
        key,
        fast: theirs.supports_fast(),
        peer_has: Bitfield::new(piece_count),
        has_version: 0,
        starved: None,
        sent_have: Bitfield::new(piece_count),
        am_interested: false,
        am_choking: true,
        peer_choking: true,
        outstanding: Vec::new(),
        last_data: now,
        last_recv: now,
        last_sent: now,
        received: 0,
        window_start: now,
        rate: 0.0,
        min_depth: MIN_PIPELINE,
        their_reqq: 250,
        snubbed: false,
        uploads: VecDeque::new(),
        bypassed: 0,
        out: BytesMut::with_capacity(OUT_BUFFER),
        sent: 0,
        steering: false,
        unsent_piece_bytes: 0,
        offers_done: false,
        offered: Bitfield::new(piece_count),
        taken: Bitfield::new(piece_count),
        requested: std::collections::HashMap::new(),
        offer_window: OFFER_AHEAD,
        drained_with_offers: None,
        bitfields: 0,
        foreign: !theirs.peer_id.starts_with(b"-MU"),
        counted_seed: false,
        ctx,
    };
    let mut events = peer.ctx.events.subscribe();
    peer.greet(theirs.supports_extended());
    let result = peer.drive(read_half, write_half, &mut events).await;
    if let Err(WireError::Protocol(_)) = &result {
        peer.ctx.protocol_errors.fetch_add(1, Ordering::Relaxed);
    }
    peer.leave();
    result
}

impl Peer {
    fn send(&mut self, message: Message) {
        message.encode(&mut self.out);
    }

    /// One loop for both directions: reading, writing, the session's events
    /// and timers, all cancel-safe, so neither direction can block the
    /// other (two peers writing to each other never deadlock).
    async fn drive(
        &mut self,
        r: &mut Reader,
        w: &mut Writer,
        events: &mut broadcast::Receiver<Event>,
    ) -> Result<(), WireError> {
        let cancel = self.ctx.cancel.clone();
        let max_len = max_message_len(self.peer_has.len());
        // With room for a `have` of every piece on top: a peer slow to read
        // a burst of them is not the peer this limit is for.
        let max_unsent = MAX_UNSENT + 9 * self.peer_has.len();
        let mut inbuf = BytesMut::with_capacity(READ_BUFFER);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut read_at = tokio::time::Instant::now();
        let mut write_at = tokio::time::Instant::now();
        // Since when bytes wait that the socket would take no part of.
        let mut stalled_since: Option<tokio::time::Instant> = None;
        let read_chunk = self
            .ctx
            .download_limit
            .as_ref()
            .map_or(usize::MAX, |l| l.chunk());
        let write_chunk = self
            .ctx
            .upload_limit
            .as_ref()
            .map_or(usize::MAX, |l| l.chunk());
        loop {
            while let Some(message) = take_message(&mut inbuf, max_len)? {
                self.handle(message)?;
            }
            if self.out.len() - self.sent > max_unsent {
                return violation("it asks for more and reads nothing of what it was sent");
            }
            if self.both_seeds() && self.sent == self.out.len() {
                // Nothing to trade; the slot is worth more to a downloader
                // (with capped peer counts, seeds holding each other's slots
                // can cut downloaders off from the swarm).
                return Ok(());
            }
            if self.out.len() - self.sent < OUT_BUFFER {
                self.serve_uploads();
            }
            self.request_more();
            if inbuf.capacity() - inbuf.len() < READ_BUFFER / 4 {
                inbuf.reserve(READ_BUFFER);
            }
            // A sealed writer may hold bytes the socket did not take.
            let pending = self.sent < self.out.len() || w.has_backlog();
            let now = tokio::time::Instant::now();
            if !pending || write_at > now {
                stalled_since = None;
            } else if stalled_since.is_some_and(|t| now - t > SEND_STALL) {
                return Err(WireError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("took nothing we sent for {} s", SEND_STALL.as_secs()),
                )));
            } else {
                stalled_since.get_or_insert(now);
            }
            let mut room = (&mut inbuf).limit(read_chunk);
            let write_end = self.out.len().min(self.sent.saturating_add(write_chunk));
            // The earliest moment a rate limit lets a waiting direction go.
            let wake = [Some(read_at), pending.then_some(write_at)]
                .into_iter()
                .flatten()
                .filter(|&t| t > now)
                .min()
                .unwrap_or(now);
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                read = r.read_buf(&mut room), if read_at <= now => {
                    let n = read?;
                    if n == 0 {
                        return Ok(());
                    }
                    self.last_recv = Instant::now();
                    if let Some(limit) = &self.ctx.download_limit {
                        read_at = now + limit.take(n);
                    }
                }
                written = w.write_queue(&mut self.out[self.sent..write_end]), if pending && write_at <= now => {
                    let n = written?;
                    stalled_since = None;
                    self.sent += n;
                    self.written(n as u64);
                    self.last_sent = Instant::now();
                    if self.sent == self.out.len() {
                        self.out.clear();
                        self.sent = 0;
                    } else if self.sent >= 4 * OUT_BUFFER {
                        // Drop what is written: a writer that takes less
                        // than the whole queue each time (a sealed link
                        // takes a frame) would otherwise never empty it,
                        // and `out` would grow into fresh memory forever.
                        // Not sooner: the unwritten rest (up to a queue's
                        // worth) moves to the front on the next append.
                        self.out.advance(self.sent);
                        self.sent = 0;
                    }
                    if let Some(limit) = &self.ctx.upload_limit {
                        write_at = now + limit.take(n);
                    }
                }
                _ = tokio::time::sleep_until(wake), if wake > now => {}
                event = events.recv() => self.on_event(event)?,
                _ = tick.tick() => self.on_tick()?,
            }
        }
    }

    /// The first messages: what we have (BEP 3: a bitfield comes first or
    /// not at all), then the extension handshake. A steering seed shows the
    /// pieces it offers as its bitfield: a client decides whether it is
    /// interested from the bitfield at once, where some (Transmission) look
    /// at `have`s only on a timer.
    fn greet(&mut self, extended: bool) {
        let have = self.ctx.pieces().have().clone();
        self.steering = self.ctx.steering.is_some() && have.is_complete();
        if self.steering {
            let offer = self.take_offers();
            let mut shown = Bitfield::new(have.len());
            for &p in &offer {
                shown.set(p);
            }
            if !offer.is_empty() {
                self.send(Message::Bitfield(Bytes::from(shown.to_bytes())));
            } else if self.fast {
                self.send(Message::HaveNone);
            }
        } else if self.fast && have.is_complete() {
            self.send(Message::HaveAll);
        } else if self.fast && have.count() == 0 {
            self.send(Message::HaveNone);
        } else if have.count() > 0 {
            self.send(Message::Bitfield(Bytes::from(have.to_bytes())));
        }
        self.sent_have = have;
        if extended {
            let mut e = Encoder::new();
            let payload = e
                .emit_dict(|mut d| {
                    d.emit_pair_with(b"m", |e| e.emit_dict(|_| Ok(())))?;
                    d.emit_pair(b"p", self.ctx.listen_port)?;
                    d.emit_pair(b"reqq", MAX_QUEUED_UPLOADS)?;
                    d.emit_pair(b"v", concat!("murder ", env!("CARGO_PKG_VERSION")))
                })
                .and_then(|_| e.get_output());
            if let Ok(payload) = payload {
                self.send(Message::Extended {
                    id: 0,
                    payload: Bytes::from(payload),
                });
            }
        }
    }

    /// Pieces a steering seed keeps on offer to one peer that it has not
    /// asked for yet: a few, so the seed has not promised every piece long
    /// before it can send them (it sends a piece twice only once every piece
    /// has left), or four times that while it is the only peer, which has
    /// no one to share with anyway; more for a peer that asks in batches.
    fn offer_window(&self) -> usize {
        let alone = if self.ctx.admission.connected() <= 1 {
            OFFER_AHEAD * 4
        } else {
            OFFER_AHEAD
        };
        alone.max(self.offer_window)
    }

    /// Offers the peer pieces it lacks (see `steering`) until it has a
    /// window's worth on offer that it has not asked for yet.
    fn offer_more(&mut self) {
        if !self.steering {
            return;
        }
        for p in self.take_offers() {
            self.send(Message::Have(p as u32));
        }
    }

    /// The pieces to offer now (marked offered); see `offer_more`.
    fn take_offers(&mut self) -> Vec<usize> {
        let Some(steering) = &self.ctx.steering else {
            return Vec::new();
        };
        if self.peer_has.is_complete() {
            // It needs nothing more from us: give up its place in line.
            if !self.offers_done {
                self.offers_done = true;
                if steering.forget(self.key, std::iter::empty(), self.offered.iter_ones()) {
                    let _ = self.ctx.events.send(Event::Offer);
                }
            }
            return Vec::new();
        }
        let want = self.offer_window().saturating_sub(self.pending_offers());
        if want == 0 {
            // Out of line until it asks for what it was offered: at the head
            // it would keep every other peer from a turn.
            if steering.pause(self.key) {
                let _ = self.ctx.events.send(Event::Offer);
            }
            return Vec::new();
        }
        let offer = {
            let pieces = self.ctx.pieces();
            let peers = self.ctx.admission.connected();
            steering.offer(
                self.key,
                &self.peer_has,
                &self.offered,
                want,
                &pieces,
                peers,
            )
        };
        for &p in &offer.pieces {
            self.offered.set(p);
        }
        if offer.turn_freed {
            let _ = self.ctx.events.send(Event::Offer);
        }
        offer.pieces
    }

    /// Offered pieces the peer neither holds nor asked for yet.
    fn pending_offers(&self) -> usize {
        self.offered
            .ones_not_in(&self.peer_has)
            .filter(|&p| !self.taken.get(p))
            .count()
    }

    /// A steering seed's account of piece bytes still to send.
    fn written(&mut self, n: u64) {
        if self.steering {
            let done = n.min(self.unsent_piece_bytes);
            self.unsent_piece_bytes -= done;
            self.dequeued(done);
        }
    }

    /// Piece bytes a steering seed no longer has to send for this peer;
    /// when that leaves it idle, waiting downloaders hear of it.
    fn dequeued(&self, bytes: u64) {
        if let (true, Some(steering)) = (self.steering, &self.ctx.steering) {
            if steering.dequeued(bytes) {
                let _ = self.ctx.events.send(Event::Offer);
            }
        }
    }

    fn handle(&mut self, message: Message) -> Result<(), WireError> {
        let count = self.peer_has.len();
        match message {
            Message::KeepAlive
            | Message::Port(_)
            | Message::Suggest(_)
            | Message::AllowedFast(_) => {}
            Message::Choke => {
                tracing::debug!(
                    "choked with {} requests outstanding",
                    self.outstanding.len()
                );
                self.peer_choking = true;
                if !self.fast {
                    // Without the fast extension a choke drops all requests.
                    let dropped = std::mem::take(&mut self.outstanding);
                    self.ctx.pieces().release(&dropped);
                }
            }
            Message::Unchoke => self.peer_choking = false,
            Message::Interested => {
                if self.am_choking && !self.ctx.serving_stopped.load(Ordering::Relaxed) {
                    self.am_choking = false;
                    self.send(Message::Unchoke);
                }
            }
            Message::NotInterested => {}
            Message::Have(piece) => {
                if piece as usize >= count {
                    return violation(format!("have for piece {piece} of {count}"));
                }
                // A have repeated changes nothing: it costs no pass over
                // the pieces (rule C4's reason for limiting bitfields).
                if self.peer_has.set(piece as usize) {
                    self.has_version += 1;
                    self.ctx.pieces().peer_has(piece as usize);
                    self.count_seed();
                    self.update_interest();
                    self.offer_more();
                }
            }
            Message::Bitfield(bytes) => {
                let Some(bits) = Bitfield::from_bytes(&bytes, count) else {
                    return violation("bitfield of the wrong size");
                };
                self.replace_has(bits)?;
            }
            Message::HaveAll if self.fast => self.replace_has(Bitfield::full(count))?,
            Message::HaveNone if self.fast => self.replace_has(Bitfield::new(count))?,
            // BEP 6: a request the peer will not serve (it choked us, or
            // cannot): the block goes back to the picker, the connection stays.
            Message::Reject(req) if self.fast => {
                tracing::debug!("request rejected: {req:?}");
                if let Some(i) = self.outstanding.iter().position(|r| *r == req) {
                    self.outstanding.swap_remove(i);
                    self.ctx.pieces().release(&[req]);
                }
            }
            Message::HaveAll | Message::HaveNone | Message::Reject(_) => {
                return violation("fast-extension message without the fast extension");
            }
            Message::Request(req) => self.on_request(req)?,
            Message::Cancel(req) => {
                if let Some(i) = self.uploads.iter().position(|r| *r == req) {
                    self.uploads.remove(i);
                    self.dequeued(req.length as u64);
                }
            }
            Message::Piece {
                piece,
                offset,
                data,
            } => self.on_block(piece, offset, data)?,
            Message::Extended { id: 0, payload } => {
                if let Some(reqq) = extended_reqq(&payload) {
                    self.their_reqq = reqq.clamp(1, 100_000);
                }
            }
            Message::Extended { .. } => {}
        }
        Ok(())
    }

    /// What the peer has, from its bitfield (or have all / have none).
    /// BEP 3 and 6 allow one, as the first message; real clients send more
    /// (aria2 follows its bitfield with another), so a few are taken, and
    /// past `MAX_BITFIELDS` the connection ends (rule C4): each costs a
    /// pass over every piece under the pieces lock.
    fn replace_has(&mut self, bits: Bitfield) -> Result<(), WireError> {
        self.bitfields += 1;
        if self.bitfields > MAX_BITFIELDS {
            return violation(format!(
                "more than {MAX_BITFIELDS} bitfields (or have all / have none)"
            ));
        }
        {
            let mut picker = self.ctx.pieces();
            picker.peer_left(&self.peer_has);
            picker.peer_has_all(&bits);
        }
        self.peer_has = bits;
        self.has_version += 1;
        self.count_seed();
        self.update_interest();
        self.offer_more();
        Ok(())
    }

    fn count_seed(&mut self) {
        let seed = self.peer_has.is_complete();
        if seed != self.counted_seed {
            self.counted_seed = seed;
            if seed {
                self.ctx.seeds_connected.fetch_add(1, Ordering::Relaxed);
            } else {
                self.ctx.seeds_connected.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn update_interest(&mut self) {
        let want = !self.ctx.is_complete() && self.ctx.pieces().interesting(&self.peer_has);
        if want != self.am_interested {
            self.am_interested = want;
            self.send(if want {
                Message::Interested
            } else {
                Message::NotInterested
            });
        }
    }

    /// A request outside the torrent ends the connection (rule C4); one we
    /// will not serve now is rejected (BEP 6) or dropped.
    fn on_request(&mut self, req: BlockRequest) -> Result<(), WireError> {
        let layout = self.ctx.storage.layout();
        let valid = (req.piece as usize) < layout.piece_count()
            && req.length > 0
            && req.length <= MAX_REQUEST
            && req.offset as u64 + req.length as u64 <= layout.piece_range(req.piece as usize).1;
        if !valid {
            return violation(format!("request outside the torrent: {req:?}"));
        }
        let servable = !self.am_choking
            && self.uploads.len() < MAX_QUEUED_UPLOADS
            && self.ctx.pieces().have().get(req.piece as usize)
            && (!self.steering || self.offered.get(req.piece as usize));
        if servable {
            if let Some(drained) = self.drained_with_offers.take() {
                if drained.elapsed() >= BATCH_GAP {
                    // It let its queue run dry with pieces on offer: it asks
                    // in batches. Offer it twice as many ahead.
                    self.offer_window = (self.offer_window() * 2).min(self.peer_has.len());
                }
            }
            self.uploads.push_back(req);
            if let (true, Some(steering)) = (self.steering, &self.ctx.steering) {
                steering.queued(req.length as u64);
            }
            if self.steering && !self.taken.get(req.piece as usize) {
                let asked = self.requested.entry(req.piece).or_insert(0);
                *asked += req.length as u64;
                // Its data, not its trailing padding: clients do not ask
                // for the zeros (BEP 47), and most pieces of a tree end so.
                if *asked >= layout.data_end(req.piece as usize) {
                    self.requested.remove(&req.piece);
                    self.taken.set(req.piece as usize);
                    self.offer_more();
                }
            }
        } else if self.fast {
            self.send(Message::Reject(req));
        }
        Ok(())
    }

    /// Chokes the peer for good: the data this session serves broke (rule
    /// W1). With the fast extension every queued request is rejected, as
    /// BEP 6 asks; without, a choke drops them.
    fn stop_serving(&mut self) {
        if self.am_choking {
            return;
        }
        self.am_choking = true;
        self.send(Message::Choke);
        for req in std::mem::take(&mut self.uploads) {
            self.dequeued(req.length as u64);
            if self.fast {
                self.send(Message::Reject(req));
            }
        }
    }

    fn serve_uploads(&mut self) {
        if self.ctx.serving_stopped.load(Ordering::Relaxed) {
            self.stop_serving();
        }
        let had_work = !self.uploads.is_empty();
        for _ in 0..UPLOADS_PER_TURN {
            let Some(req) = self.next_upload() else {
                break;
            };
            if !self.ctx.check_before_serving(req.piece) {
                if self.fast {
                    self.send(Message::Reject(req));
                }
                continue;
            }
            let header_at = self.out.len();
            Message::encode_piece_header(&mut self.out, req.piece, req.offset, req.length);
            let data_at = self.out.len();
            self.out.resize(data_at + req.length as usize, 0);
            match self
                .ctx
                .storage
                .read(req.piece, req.offset, &mut self.out[data_at..])
            {
                Ok(()) => {
                    self.unsent_piece_bytes += req.length as u64;
                    self.ctx
                        .uploaded
                        .fetch_add(req.length as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    // Rule W1: the data this session holds is broken (cut
                    // short, gone, a disk error): it fails, named, rather
                    // than leave its peers to wait out their stall timeout.
                    let e = self.ctx.storage.read_error(e);
                    self.ctx.fail(&e);
                    self.dequeued(req.length as u64);
                    self.out.truncate(header_at);
                    if self.fast {
                        self.send(Message::Reject(req));
                    }
                    if self.ctx.serving_stopped.load(Ordering::Relaxed) {
                        self.stop_serving();
                        break;
                    }
                }
            }
        }
        if had_work && self.uploads.is_empty() {
            if self.steering && self.foreign && self.pending_offers() > 0 {
                self.drained_with_offers = Some(Instant::now());
            }
            // The seed may have run out of work: pieces still in flight
            // elsewhere may be offered now.
            self.offer_more();
        }
    }

    /// The queued request to serve next: rarest piece first (fewest of our
    /// peers hold it), in the order asked within a piece. A piece that just
    /// arrived here is what the swarm lacks most; serving it before the
    /// common ones a peer also asked for spreads it a queue's time sooner.
    /// The oldest request is passed over at most MAX_BYPASSES times, so a
    /// common piece the peer started is not left unfinished.
    fn next_upload(&mut self) -> Option<BlockRequest> {
        let next = if self.uploads.len() > 1 && self.bypassed < MAX_BYPASSES {
            let picker = self.ctx.pieces();
            self.uploads
                .iter()
                .enumerate()
                .min_by_key(|&(i, r)| (picker.availability(r.piece as usize), i))
                .map(|(i, _)| i)
        } else {
            Some(0)
        };
        self.bypassed = match next {
            Some(0) | None => 0,
            Some(_) => self.bypassed + 1,
        };
        next.and_then(|i| self.uploads.remove(i))
    }

    /// A block arrived. Rule B1: the first copy of a wanted block is
    /// accepted and this connection alone writes it; any other copy is
    /// dropped unwritten (its hash is kept, to find out a liar). The block
    /// goes to the hasher only after its write succeeded (rule P3), and a
    /// failed write fails the session (rule W1).
    fn on_block(&mut self, piece: u32, offset: u32, data: Bytes) -> Result<(), WireError> {
        let layout = self.ctx.storage.layout();
        let req = BlockRequest {
            piece,
            offset,
            length: data.len() as u32,
        };
        if piece as usize >= layout.piece_count()
            || data.len() > MAX_REQUEST as usize
            || offset as u64 + data.len() as u64 > layout.piece_range(piece as usize).1
        {
            return violation("block outside its piece");
        }
        let requested = self.outstanding.iter().position(|r| *r == req);
        if let Some(i) = requested {
            self.outstanding.swap_remove(i);
            self.last_data = Instant::now();
            self.snubbed = false;
        }
        let start = piece as u64 * layout.piece_length() + offset as u64;
        let pad_dirty = layout.pad_dirty(start, &data);
        let accepted = self.ctx.pieces().accept(&req, self.key, pad_dirty);
        // Payload counts (for the tracker, the rate, the watchdog) when we
        // asked this peer for it or can use it: a peer repeating a block
        // nobody asked for kept a stalled download "receiving" for ever.
        if requested.is_some() || matches!(accepted, Accept::Write { .. }) {
            self.ctx
                .downloaded
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            self.received += data.len() as u64;
        }
        match accepted {
            Accept::Unwanted => {}
            Accept::Duplicate => {
                let hash: [u8; 20] = sha1::Sha1::digest(&data).into();
                self.ctx.pieces().duplicate(&req, self.key, hash);
            }
            Accept::Write { others_asked } => {
                if others_asked {
                    let _ = self.ctx.events.send(Event::Accepted {
                        piece,
                        offset,
                        from: self.key,
                    });
                }
                if let Err(e) = self.ctx.storage.write(piece, offset, &data) {
                    self.ctx.pieces().write_failed(&req);
                    self.ctx.fail(&e);
                    return Ok(());
                }
                self.ctx.hasher.block(piece, offset, data);
                let job = self.ctx.pieces().written(&req);
                if let Some(job) = job {
                    self.ctx.hasher.verify(job);
                }
            }
        }
        Ok(())
    }

    /// Requests to keep in flight: QUEUE_SECONDS of this peer's measured
    /// delivery rate, within MIN_PIPELINE and the configured pipeline.
    fn pipeline_depth(&mut self) -> usize {
        let now = Instant::now();
        let elapsed = now - self.window_start;
        if elapsed >= RATE_WINDOW {
            let sample = self.received as f64 / elapsed.as_secs_f64();
            self.rate = if self.rate == 0.0 {
                sample
            } else {
                (self.rate + sample) / 2.0
            };
            self.received = 0;
            self.window_start = now;
        }
        let cap = self.ctx.config.pipeline.max(1);
        let depth = (self.rate * QUEUE_SECONDS / crate::wire::BLOCK as f64) as usize;
        depth.clamp(self.min_depth.min(cap), cap)
    }

    fn request_more(&mut self) {
        if self.peer_choking || !self.am_interested {
            return;
        }
        let depth = if self.snubbed {
            SNUBBED_PIPELINE
        } else {
            self.pipeline_depth().min(self.their_reqq)
        };
        let room = depth.saturating_sub(self.outstanding.len());
        // Top up in batches: fewer trips to the picker's lock.
        if room == 0 || (room < depth / 4 && !self.outstanding.is_empty()) {
            return;
        }
        let epoch = self.ctx.pick_epoch.load(Ordering::Relaxed);
        if self.starved == Some((epoch, self.has_version)) {
            return;
        }
        let picked = self
            .ctx
            .pieces()
            .pick(&self.peer_has, room, &self.outstanding);
        self.starved = (picked.len() < room).then_some((epoch, self.has_version));
        if self.outstanding.is_empty() && !picked.is_empty() {
            self.last_data = Instant::now();
        }
        for req in picked {
            self.send(Message::Request(req));
            self.outstanding.push(req);
        }
    }

    fn on_event(
        &mut self,
        event: Result<Event, broadcast::error::RecvError>,
    ) -> Result<(), WireError> {
        match event {
            Ok(Event::Accepted {
                piece,
                offset,
                from,
            }) if from != self.key => {
                if let Some(i) = self
                    .outstanding
                    .iter()
                    .position(|r| r.piece == piece && r.offset == offset)
                {
                    let req = self.outstanding.swap_remove(i);
                    self.send(Message::Cancel(req));
                }
            }
            Ok(Event::Accepted { .. }) => {}
            Ok(Event::Offer) => self.offer_more(),
            Ok(Event::Have) | Ok(Event::Complete) | Err(broadcast::error::RecvError::Lagged(_)) => {
                if self.ctx.admission.is_banned(self.key) {
                    return violation("banned after sending corrupt data");
                }
                self.sync_haves();
            }
            Err(broadcast::error::RecvError::Closed) => {}
        }
        Ok(())
    }

    /// Tells the peer of every piece we verified since we last told it, and
    /// cancels what we still asked for of those pieces.
    fn sync_haves(&mut self) {
        let have = self.ctx.pieces().have().clone();
        let new: Vec<usize> = have.ones_not_in(&self.sent_have).collect();
        for piece in new {
            self.send(Message::Have(piece as u32));
            let (cancel, keep): (Vec<_>, Vec<_>) = self
                .outstanding
                .iter()
                .partition(|r| r.piece as usize == piece);
            for req in cancel {
                self.send(Message::Cancel(req));
            }
            self.outstanding = keep;
        }
        self.sent_have = have;
        self.update_interest();
    }

    /// MIN_PIPELINE, unless the session's download limit is known and
    /// MIN_PIPELINE on every connection would queue more than
    /// QUEUE_SECONDS of it: then the limit's share per connection (at
    /// least two blocks). Requests beyond what the link can take in
    /// QUEUE_SECONDS only wait in queues and make every piece late.
    fn pipeline_floor(&self) -> usize {
        let Some(limit) = &self.ctx.download_limit else {
            return MIN_PIPELINE;
        };
        let connections = self.ctx.admission.connected().max(1);
        let budget = limit.bytes_per_sec() * QUEUE_SECONDS / crate::wire::BLOCK as f64;
        ((budget / connections as f64) as usize).clamp(2, MIN_PIPELINE)
    }

    fn both_seeds(&self) -> bool {
        // The peer's bitfield first: a field read, where the session's
        // state takes a lock, and this runs on every pass of the loop.
        self.peer_has.is_complete() && self.ctx.is_complete()
    }

    fn on_tick(&mut self) -> Result<(), WireError> {
        let now = Instant::now();
        self.starved = None; // look again now and then, whatever changed
        self.min_depth = self.pipeline_floor();
        if !self.outstanding.is_empty() && now - self.last_data > self.ctx.config.snub_timeout {
            // Stalled: its blocks go to faster peers.
            let dropped = std::mem::take(&mut self.outstanding);
            self.ctx.pieces().release(&dropped);
            self.snubbed = true;
        }
        if now - self.last_recv > IDLE_TIMEOUT {
            return violation("silent for too long");
        }
        self.offer_more();
        if now - self.last_sent > KEEPALIVE {
            self.send(Message::KeepAlive);
        }
        Ok(())
    }

    fn leave(&mut self) {
        if self.counted_seed {
            self.ctx.seeds_connected.fetch_sub(1, Ordering::Relaxed);
        }
        {
            let mut picker = self.ctx.pieces();
            picker.release(&self.outstanding);
            picker.peer_left(&self.peer_has);
        }
        let queued: u64 = self.uploads.iter().map(|r| r.length as u64).sum();
        self.dequeued(queued + self.unsent_piece_bytes);
        if let (true, Some(steering)) = (self.steering, &self.ctx.steering) {
            // Offers this peer never took up go back to the pool.
            let held = self.offered.iter_ones().filter(|&p| self.peer_has.get(p));
            if steering.forget(self.key, self.offered.ones_not_in(&self.peer_has), held) {
                let _ = self.ctx.events.send(Event::Offer);
            }
        }
    }
}

/// The `reqq` of a BEP 10 extension handshake.
fn extended_reqq(payload: &[u8]) -> Option<usize> {
    let mut decoder = Decoder::new(payload).with_max_depth(4);
    let Ok(Some(Object::Dict(mut dict))) = decoder.next_object() else {
        return None;
    };
    while let Ok(Some((key, value))) = dict.next_pair() {
        if key == b"reqq" {
            if let Object::Integer(n) = value {
                return n.parse().ok();
            }
        }
    }
    None
}
