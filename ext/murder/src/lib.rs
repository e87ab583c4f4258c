//! The `murder` Ruby extension: thin magnus bindings over murder-core.
//! Keyword arguments and documentation live in `lib/murder/*.rb`; the
//! native methods here take plain positional arguments.

use magnus::{Error, Ruby};

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
    Ok(())
}
