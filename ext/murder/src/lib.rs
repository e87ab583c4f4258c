//! The `murder` Ruby extension: thin magnus bindings over murder-core.
//! Keyword arguments and documentation live in `lib/murder/*.rb`; the
//! native methods here take plain positional arguments.

use magnus::{function, Error, RString, Ruby};

mod errors;
mod nogvl;
mod session;
mod torrent;
mod tracker;

#[magnus::init(name = "murder")]
fn init(ruby: &Ruby) -> Result<(), Error> {
    let module = ruby.define_module("Murder")?;
    torrent::define(ruby, module)?;
    tracker::define(ruby, module)?;
    session::define(ruby, module)?;
    module.define_module_function("__ticket_delta", function!(ticket_delta, 2))?;
    Ok(())
}

/// A deploy ticket's torrent as a difference from `base`, and the name of
/// that base (murder_core::ticket_delta: the one rule for both); nil when
/// the two are too large for one difference.
fn ticket_delta(
    ruby: &Ruby,
    torrent: RString,
    base: RString,
) -> Result<Option<(RString, String)>, Error> {
    // SAFETY: both Strings are only read, here, while no Ruby code runs.
    let (torrent, base) = unsafe { (torrent.as_slice().to_vec(), base.as_slice().to_vec()) };
    let difference =
        murder_core::ticket_delta::encode(&torrent, &base).map_err(|e| errors::to_ruby(ruby, e))?;
    let name = murder_core::ticket_delta::base_id(&base);
    Ok(difference.map(|d| (ruby.str_from_slice(&d), name)))
}
