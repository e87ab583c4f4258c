//! A deploy ticket's torrent as the difference from the torrent the host
//! was sent last time. A tree's torrent is mostly piece and file SHA-1s
//! (276 KB compressed for a 66 MiB tree of 3,359 files), and every host's
//! ticket crosses the deployer's uplink before the swarm can start; an
//! everyday release changes a few dozen of those hashes, so the difference
//! is a few KB (zstd with the last torrent as its reference prefix, as
//! `zstd --patch-from` makes it).
//!
//! A difference names its base by the SHA-1 of the base's bytes: a host
//! decodes it only against the very bytes it was made from, and a host that
//! holds other bytes (or none) asks for the whole torrent instead.

use std::io::{Read, Write};

use sha1::{Digest, Sha1};

use crate::error::{Error, Result};
use crate::metainfo::MAX_TORRENT_BYTES;

/// The widest window a difference may need: zstd's default limit for a
/// decoder (128 MiB), so that no host is asked for more memory than that.
const MAX_WINDOW_LOG: u32 = 27;

/// zstd's level: the difference is small at any level, and fast at this one.
const LEVEL: i32 = 3;

/// The name of a base: the hex SHA-1 of its bytes.
pub fn base_id(base: &[u8]) -> String {
    hex::encode(Sha1::digest(base))
}

/// `torrent` as a difference from `base`; `None` when the two together
/// are larger than one window (send the whole torrent then).
pub fn encode(torrent: &[u8], base: &[u8]) -> Result<Option<Vec<u8>>> {
    let span = base.len() + torrent.len();
    if span > 1 << MAX_WINDOW_LOG {
        return Ok(None);
    }
    // The window covers the base and the torrent: every match may reach
    // back into the base.
    let window_log = span.max(1 << 10).next_power_of_two().trailing_zeros();
    let fail = |e: std::io::Error| Error::Internal(format!("ticket difference: {e}"));
    let mut encoder =
        zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), LEVEL, base).map_err(fail)?;
    encoder.window_log(window_log).map_err(fail)?;
    encoder.include_checksum(true).map_err(fail)?;
    encoder.write_all(torrent).map_err(fail)?;
    encoder.finish().map(Some).map_err(fail)
}

/// The torrent `difference` encodes against `base` (which the caller
/// matched by its [`base_id`]); refused past the largest torrent accepted,
/// so a small ticket cannot inflate without bound.
pub fn decode(difference: &[u8], base: &[u8]) -> Result<Vec<u8>> {
    let fail = |e: std::io::Error| {
        Error::InvalidArgument(format!(
            "deploy ticket: the difference does not decode ({e})"
        ))
    };
    let mut decoder =
        zstd::stream::read::Decoder::with_ref_prefix(difference, base).map_err(fail)?;
    decoder.window_log_max(MAX_WINDOW_LOG).map_err(fail)?;
    let mut torrent = Vec::new();
    decoder
        .take(MAX_TORRENT_BYTES as u64 + 1)
        .read_to_end(&mut torrent)
        .map_err(fail)?;
    if torrent.len() > MAX_TORRENT_BYTES {
        return Err(Error::InvalidArgument(format!(
            "deploy ticket: the difference decodes past {MAX_TORRENT_BYTES} bytes"
        )));
    }
    Ok(torrent)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two torrents alike but for a few hashes, as two releases' are.
    fn pair() -> (Vec<u8>, Vec<u8>) {
        let mut state = 7u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (state >> 56) as u8
                })
                .collect()
        };
        let base = noise(300_000);
        let mut next = base.clone();
        next[1000..1020].copy_from_slice(&noise(20));
        next.extend(noise(40));
        (base, next)
    }

    #[test]
    fn a_difference_is_small_and_decodes_to_the_torrent_against_its_base() {
        let (base, next) = pair();
        let difference = encode(&next, &base).unwrap().unwrap();
        assert!(difference.len() < 1_000, "{} bytes", difference.len());
        assert_eq!(decode(&difference, &base).unwrap(), next);
    }

    #[test]
    fn against_other_bytes_a_difference_fails_its_checksum_or_does_not_decode() {
        let (base, next) = pair();
        let difference = encode(&next, &base).unwrap().unwrap();
        let mut other = base.clone();
        other[5000] ^= 1;
        assert!(decode(&difference, &other).is_err());
        assert!(decode(b"not zstd", &base)
            .unwrap_err()
            .to_string()
            .contains("does not decode"));
    }

    #[test]
    fn the_base_is_named_by_the_sha1_of_its_bytes() {
        assert_eq!(base_id(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
