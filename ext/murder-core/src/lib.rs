//! murder-core: the engine of murder, BitTorrent deploys for fleets of
//! servers. A plain library that knows nothing of Ruby: the magnus extension
//! and the `murder` command are thin front ends over it.

pub mod bitfield;
pub mod create;
pub mod error;
pub mod fsutil;
pub mod hash_cache;
pub mod hashing;
pub mod layout;
pub mod listen;
pub mod metainfo;
pub mod metrics;
pub mod picker;
pub mod progress;
pub mod relay;
pub mod reuse;
pub mod secure;
pub mod session;
pub mod storage;
pub mod ticket_delta;
pub mod tracker;
pub mod units;
pub mod wire;

pub use create::{
    announce_url, auto_piece_length, create_torrent, create_torrent_with_cache, CacheUse,
    CreateOptions,
};
pub use error::{Error, MetainfoError, Result};
pub use metainfo::{FileEntry, Metainfo};
pub use progress::Progress;
