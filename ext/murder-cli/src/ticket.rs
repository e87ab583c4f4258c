//! A deploy ticket: what a deploy tool hands `murder peer -` on its standard
//! input over the SSH channel it already trusts, so that nothing of it shows
//! on a command line or in a file others could read. One JSON line (a
//! header), then the .torrent's bytes:
//!
//! ```text
//! {"torrent":LENGTH,"secret":"64 hex digits","encoding":"zlib"}\n<LENGTH bytes>
//! ```
//!
//! `secret` (optional) makes the download a closed swarm of that secret.
//! `encoding` (optional) `zlib`: the LENGTH bytes are the .torrent
//! compressed with zlib (RFC 1950). A tree's torrent is mostly paths and
//! pad-file entries and shrinks to less than half, and every host's ticket
//! crosses the deployer's uplink before the swarm starts. `zstd-delta`,
//! with `"base":"40 hex digits"`: the bytes are the .torrent as a
//! difference from the torrent this host was sent last time
//! (murder_core::ticket_delta), which `murder peer --ticket-base FILE`
//! keeps; the base is the SHA-1 of that file's bytes. A host whose file is
//! missing or other fails with [`BASE_MISSING`] before it does anything,
//! and the deploy tool sends it the whole torrent instead.

use std::io::{BufRead, Read};
use std::path::Path;

use murder_core::secure::SwarmSecret;
use murder_core::Metainfo;
use serde::Deserialize;

/// What the tool prints on standard error when it is ready for the ticket
/// (a deploy tool waits for it before it writes).
pub const PROMPT: &str = "murder: reading the deploy ticket from standard input";

/// In the error of a host that does not hold the base a difference names
/// (a deploy tool sends that host the whole torrent, as it did before).
pub const BASE_MISSING: &str = "murder-ticket-base-missing";

#[derive(Deserialize)]
struct Header {
    torrent: usize,
    /// A closed swarm's secret, 64 hex digits.
    #[serde(default)]
    secret: Option<String>,
    /// `zlib`, `zstd-delta`, or absent: the bytes are the .torrent itself.
    #[serde(default)]
    encoding: Option<String>,
    /// What a `zstd-delta` is a difference from: the SHA-1 of its bytes.
    #[serde(default)]
    base: Option<String>,
}

pub struct Ticket {
    pub torrent: Metainfo,
    pub secret: Option<SwarmSecret>,
}

/// The ticket on standard input. With `base`, a difference is decoded
/// against that file, and the torrent the ticket holds is kept there for
/// the next one (if it cannot be kept, the next ticket comes whole).
pub fn read(base: Option<&Path>) -> Result<Ticket, String> {
    eprintln!("{PROMPT}");
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = String::new();
    (&mut input)
        .take(64 * 1024)
        .read_line(&mut line)
        .map_err(|e| format!("deploy ticket: {e}"))?;
    let header: Header =
        serde_json::from_str(line.trim()).map_err(|e| format!("deploy ticket header: {e}"))?;
    if header.torrent > murder_core::metainfo::MAX_TORRENT_BYTES {
        return Err(format!(
            "deploy ticket: a torrent of {} bytes is too large",
            header.torrent
        ));
    }
    let mut bytes = vec![0u8; header.torrent];
    input
        .read_exact(&mut bytes)
        .map_err(|e| format!("deploy ticket: the torrent ends early ({e})"))?;
    let bytes = match header.encoding.as_deref() {
        None => bytes,
        Some("zlib") => inflate(&bytes)?,
        Some("zstd-delta") => undelta(&bytes, header.base.as_deref(), base)?,
        Some(other) => return Err(format!("deploy ticket: unknown encoding {other:?}")),
    };
    let torrent =
        Metainfo::from_bytes(&bytes).map_err(|e| format!("deploy ticket: invalid torrent: {e}"))?;
    if let Some(path) = base {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let kept = dir
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(|e| e.to_string());
        if let Err(e) = kept.and_then(|()| {
            murder_core::fsutil::write_privately(path, &bytes).map_err(|e| e.to_string())
        }) {
            tracing::warn!("keeping the ticket's torrent as the next one's base: {e}");
        }
    }
    let secret = header
        .secret
        .as_deref()
        .map(SwarmSecret::from_hex)
        .transpose()
        .map_err(|e| format!("deploy ticket: {e}"))?;
    Ok(Ticket { torrent, secret })
}

/// The .torrent a `zstd-delta` ticket encodes against the base it names,
/// which must be the bytes of `kept` (else [`BASE_MISSING`]).
fn undelta(difference: &[u8], named: Option<&str>, kept: Option<&Path>) -> Result<Vec<u8>, String> {
    let named = named.ok_or("deploy ticket: a zstd-delta names no base")?;
    let kept =
        kept.ok_or_else(|| format!("{BASE_MISSING}: this peer keeps no base (--ticket-base)"))?;
    let base =
        std::fs::read(kept).map_err(|e| format!("{BASE_MISSING}: {}: {e}", kept.display()))?;
    if murder_core::ticket_delta::base_id(&base) != named {
        return Err(format!(
            "{BASE_MISSING}: {} is not the base the ticket names",
            kept.display()
        ));
    }
    murder_core::ticket_delta::decode(difference, &base).map_err(|e| e.to_string())
}

/// The .torrent inside a zlib stream, refused past the largest torrent
/// accepted (a small ticket must not inflate without bound).
fn inflate(compressed: &[u8]) -> Result<Vec<u8>, String> {
    let limit = murder_core::metainfo::MAX_TORRENT_BYTES;
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(compressed)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("deploy ticket: the torrent does not inflate ({e})"))?;
    if out.len() > limit {
        return Err(format!(
            "deploy ticket: the torrent inflates past {limit} bytes"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn deflate(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_zlib_torrent_inflates_and_a_bomb_or_garbage_is_refused() {
        let torrent = b"d4:infod6:lengthi1e4:name1:aee".repeat(3);
        assert_eq!(inflate(&deflate(&torrent)).unwrap(), torrent);
        let bomb = deflate(&vec![0u8; murder_core::metainfo::MAX_TORRENT_BYTES + 1]);
        assert!(inflate(&bomb).unwrap_err().contains("inflates past"));
        assert!(inflate(b"not zlib")
            .unwrap_err()
            .contains("does not inflate"));
    }
}
