# frozen_string_literal: true

module Murder
  # Every error murder raises is a `Murder::Error`; rescue this class to
  # catch them all. The native extension (ext/murder/src/errors.rs) raises
  # the subclasses below for the engine's errors, and this class itself for
  # a session that failed (the message names why and where) and for
  # internal errors. {Download#run} raises it for a failed or timed-out
  # download, {RakeTask#ship} for hosts that failed.
  class Error < StandardError; end

  # A .torrent that is not valid bencode, misses fields, is larger than
  # 64 MiB, or would write outside its destination (an unsafe path).
  # Raised by {Torrent.load}, {Torrent.parse} and {Tracker#allow}.
  class InvalidTorrent < Error; end

  # A file or directory could not be read or written (the message starts
  # with its path), a file changed while it was being hashed, or a port
  # could not be bound ("[::]:8998: Address already in use").
  class FileError < Error; end

  # An argument that cannot work: a bad tracker address, piece length,
  # address or option value, nothing to share, data that does not match the
  # torrent, or a call in the wrong state (a tracker or session not started,
  # or started twice).
  class InvalidArgument < Error; end

  # Work that was asked to stop: {Download#run} raises it when {Session#stop}
  # is called from another thread meanwhile. (An interrupt such as Ctrl-C or
  # `Thread#raise` raises its own exception instead, not this one.)
  class Cancelled < Error; end
end
