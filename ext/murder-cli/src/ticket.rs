//! A deploy ticket: what a deploy tool hands `murder peer -` on its standard
//! input over the SSH channel it already trusts, so that nothing of it shows
//! on a command line or in a file others could read. One JSON line (a
//! header), then the .torrent's bytes:
//!
//! ```text
//! {"torrent":LENGTH,"secret":"64 hex digits"}\n<LENGTH bytes of the .torrent>
//! ```
//!
//! `secret` (optional) makes the download a closed swarm of that secret.

use std::io::{BufRead, Read};

use murder_core::secure::SwarmSecret;
use murder_core::Metainfo;
use serde::Deserialize;

/// What the tool prints on standard error when it is ready for the ticket
/// (a deploy tool waits for it before it writes).
pub const PROMPT: &str = "murder: reading the deploy ticket from standard input";

#[derive(Deserialize)]
struct Header {
    torrent: usize,
    /// A closed swarm's secret, 64 hex digits.
    #[serde(default)]
    secret: Option<String>,
}

pub struct Ticket {
    pub torrent: Metainfo,
    pub secret: Option<SwarmSecret>,
}

/// The ticket on standard input.
pub fn read() -> Result<Ticket, String> {
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
    let torrent =
        Metainfo::from_bytes(&bytes).map_err(|e| format!("deploy ticket: invalid torrent: {e}"))?;
    let secret = header
        .secret
        .as_deref()
        .map(SwarmSecret::from_hex)
        .transpose()
        .map_err(|e| format!("deploy ticket: {e}"))?;
    Ok(Ticket { torrent, secret })
}
