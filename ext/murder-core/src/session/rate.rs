//! Token-bucket rate limits for a session's uploads or downloads (a host
//! sharing a link with other work; the swarm simulation's per-host links).

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimit {
    bytes_per_sec: f64,
    burst: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        RateLimit {
            bytes_per_sec: rate,
            // A tenth of a second's worth: smooth, yet no stalls per block.
            burst: (rate / 10.0).max(64.0 * 1024.0),
            bucket: Mutex::new((0.0, Instant::now())),
        }
    }

    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes_per_sec
    }

    /// The most to send or receive at once: a fiftieth of a second's worth
    /// (at least a block and its header), so one write cannot run up a debt
    /// that stalls every other connection of the session.
    pub fn chunk(&self) -> usize {
        ((self.bytes_per_sec / 50.0) as usize).clamp(16 * 1024 + 13, 256 * 1024)
    }

    /// Bytes a socket buffer should hold under this limit: about 50 ms of
    /// it, like the queue of a capped link, so data the kernel took is data
    /// on its way rather than seconds of backlog the engine cannot see.
    pub fn socket_buffer(&self) -> usize {
        ((self.bytes_per_sec / 20.0) as usize).clamp(32 * 1024, 4 << 20)
    }

    /// Takes `bytes` from the bucket; returns how long to wait before
    /// sending (or after receiving) them to stay within the rate.
    pub fn take(&self, bytes: usize) -> Duration {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *bucket;
        let refilled = (tokens + (now - last).as_secs_f64() * self.bytes_per_sec).min(self.burst);
        let left = refilled - bytes as f64;
        *bucket = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.bytes_per_sec)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_in_proportion_to_the_debt() {
        let limit = RateLimit::new(1_000_000);
        let mut last = Duration::ZERO;
        for _ in 0..10 {
            last = limit.take(100_000);
        }
        // 1 MB taken at once at 1 MB/s: the last part may go after about 1 s.
        assert!(
            last > Duration::from_millis(900) && last < Duration::from_millis(1050),
            "{last:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
        assert!(limit.take(1) < last, "the bucket refills with time");
    }
}
