//! Engine errors become Ruby exceptions under `Murder::Error`; the classes
//! are defined in lib/murder/error.rb so they are documented in Ruby.

use magnus::{prelude::*, Error, ExceptionClass, RModule, Ruby};
use murder_core::Error as CoreError;

fn class(ruby: &Ruby, name: &str) -> ExceptionClass {
    ruby.class_object()
        .const_get::<_, RModule>("Murder")
        .and_then(|m| m.const_get::<_, ExceptionClass>(name))
        .unwrap_or_else(|_| ruby.exception_runtime_error())
}

pub fn to_ruby(ruby: &Ruby, error: CoreError) -> Error {
    let name = match &error {
        CoreError::InvalidTorrent(_) | CoreError::InvalidTorrentFile { .. } => "InvalidTorrent",
        CoreError::Io { .. } | CoreError::ChangedWhileHashing { .. } => "FileError",
        CoreError::NothingToShare(_) | CoreError::InvalidArgument(_) => "InvalidArgument",
        CoreError::Cancelled => "Cancelled",
        CoreError::Failed(_) | CoreError::Internal(_) => "Error",
    };
    Error::new(class(ruby, name), error.to_string())
}
