# frozen_string_literal: true

module Murder
  # Every error murder raises is a Murder::Error.
  class Error < StandardError; end

  # A .torrent that is not valid bencode, misses fields, or would write
  # outside its destination.
  class InvalidTorrent < Error; end

  # A file or directory could not be read or written.
  class FileError < Error; end

  # An argument that cannot work (a bad tracker address, piece length, ...).
  class InvalidArgument < Error; end

  # Work that was asked to stop.
  class Cancelled < Error; end
end
