# frozen_string_literal: true

module Murder
  # A BitTorrent v1 torrent (.torrent file), validated when it is read or
  # made: a torrent whose paths would leave its destination is refused.
  # Immutable; a Torrent may be used from any number of threads at once.
  # The readers ({#info_hash}, {#name}, {#files}, ...) are native and quick.
  #
  # @example Make a torrent, showing progress
  #   torrent = Murder::Torrent.create("release/", tracker: "10.0.0.1:8998") do |done, total|
  #     print "\rhashing #{100 * done / total}%" if total.positive?
  #   end
  #   torrent.write("release.torrent")
  #   Murder::Torrent.load("release.torrent").info_hash # => "57a6..."
  #
  # @!method info_hash
  #   The torrent's identity: the SHA-1 of its bencoded `info`.
  #   @return [String] 40 lowercase hex digits
  #
  # @!method name
  #   The name of the file or the top directory (`info.name`).
  #   @return [String]
  #
  # @!method announce
  #   The tracker's announce URL.
  #   @return [String, nil] nil when the torrent names none
  #
  # @!method total_length
  #   Bytes in all the pieces, pad files of an aligned torrent included.
  #   @return [Integer]
  #
  # @!method data_length
  #   Bytes a host holds of the torrent: {#total_length} without the pad
  #   files, which are never written.
  #   @return [Integer]
  #
  # @!method piece_length
  #   @return [Integer] bytes per piece (the last piece may be shorter)
  #
  # @!method piece_count
  #   @return [Integer] the number of pieces
  #
  # @!method private?
  #   Whether the torrent is private (BEP 27: peers only from the tracker).
  #   @return [Boolean]
  #
  # @!method single_file?
  #   Whether the torrent is one file rather than a directory.
  #   @return [Boolean]
  #
  # @!method empty_dirs
  #   The tree's directories that hold no file (`/`-separated, below the
  #   torrent's name): a download makes them, as it makes the files. Only
  #   aligned trees (`align: true`) record them; other clients ignore them.
  #   @return [Array<String>]
  #
  # @!method to_bencode
  #   The bytes of the .torrent file; `info` is kept byte for byte, so the
  #   info-hash never changes in a round trip through {Torrent.parse}.
  #   @return [String] a binary (ASCII-8BIT) String
  class Torrent
    # One file of the torrent (pad files are never one).
    #
    # @!attribute [rw] path
    #   @return [String] its path below the torrent's name, joined by "/"
    #     (for a single-file torrent, the torrent's name)
    # @!attribute [rw] length
    #   @return [Integer] its length in bytes
    File = Struct.new(:path, :length)

    class << self
      # Makes the torrent of `path` (a file or a directory), hashing on every
      # core with the GVL released: other Ruby threads run meanwhile. An
      # interrupt (Ctrl-C, `Thread#raise`, `Thread#kill`) or an exception
      # from the block stops the hashing and is raised here.
      #
      # `align: true` (a directory only; ignored for a file) starts every
      # file on a piece boundary (BEP 47 pad files), marks executables and
      # keeps symbolic links as links (they must point inside the tree), so
      # that hosts can reuse files they hold already; `hash_cache` then names
      # a file where what each file hashed to is remembered, so that only
      # changed files are hashed the next time, and `exclude` leaves out
      # files and directories by name.
      #
      # @example An aligned tree, hashing only what changed since last time
      #   Murder::Torrent.create("build/", tracker: "10.0.0.1:8998", align: true,
      #                          hash_cache: "tmp/murder/hashes.json", exclude: [".git"])
      #
      # @param path [String, #to_s] the file or directory to share
      # @param tracker [String, #to_s, Array<String>] the tracker as
      #   `HOST:PORT` (announced as `http://HOST:PORT/announce`), or a full
      #   `http://` or `https://` announce URL; several: BEP 12
      #   `announce-list`, one tier each (murder peers announce to all and
      #   merge their peers, so any one tracker is enough)
      # @param piece_length [Integer, nil] bytes per piece: a power of two from
      #   16 KiB to 128 MiB; nil picks one from the size
      # @param private [Boolean] mark the torrent private (BEP 27)
      # @param comment [String, nil] the torrent's comment
      # @param align [Boolean] make an aligned tree (see above)
      # @param hash_cache [String, #to_s, nil] the hash cache file of an
      #   aligned tree (read if it is there, written afterwards; a missing or
      #   unreadable one is an empty cache)
      # @param exclude [Array<String>] globs (`File.fnmatch` style, e.g.
      #   `".git"`, `"*.log"`) naming files and directories an aligned tree
      #   leaves out, at any depth; they match a name, not a path. Needs
      #   `align: true`
      # @yield [done, total] with the GVL held, about ten times a second and
      #   once at the end
      # @yieldparam done [Integer] bytes hashed so far (files found in the
      #   hash cache count as hashed)
      # @yieldparam total [Integer] bytes to hash in all; 0 until hashing
      #   starts (while a tree is still being listed)
      # @return [Murder::Torrent]
      # @raise [Murder::InvalidArgument] for a bad `tracker` or
      #   `piece_length`, a bad glob in `exclude` or `exclude` without
      #   `align`, nothing to share (no file, or only empty ones), a
      #   `path` that is neither a regular file nor a directory, a name that
      #   is not UTF-8, or a symbolic link that points outside the tree
      # @raise [Murder::FileError] when `path` or a file below it cannot be
      #   read, a file changes while it is hashed, or the hash cache cannot
      #   be written
      # @raise [Interrupt, Exception] an interrupt, or what the block raised
      def create(path, tracker:, piece_length: nil, private: false, comment: nil, align: false, hash_cache: nil,
                 exclude: [], &progress)
        trackers = Array(tracker).map(&:to_s)
        raise InvalidArgument, "a torrent needs a tracker" if trackers.empty?

        __create(path.to_s, trackers, piece_length, private ? true : false, comment, align ? true : false,
                 hash_cache&.to_s, Array(exclude).map(&:to_s), &progress)
      end

      # Reads and validates a .torrent file (with the GVL held: it is small).
      #
      # @param path [String, #to_s] the .torrent file
      # @return [Murder::Torrent]
      # @raise [Murder::FileError] when the file cannot be read
      # @raise [Murder::InvalidTorrent] when it is not a valid torrent (bad
      #   bencode, missing or invalid fields, unsafe paths, over 64 MiB)
      def load(path)
        __load(path.to_s)
      end

      # Parses and validates the bytes of a .torrent file.
      #
      # @example
      #   Murder::Torrent.parse(torrent.to_bencode).info_hash == torrent.info_hash # => true
      #
      # @param bytes [String] the file's bytes (any encoding; read as binary)
      # @return [Murder::Torrent]
      # @raise [Murder::InvalidTorrent] when they are not a valid torrent
      # @raise [TypeError] when `bytes` cannot be converted to a String
      def parse(bytes)
        __parse(String(bytes).b)
      end
    end

    # The torrent's files in the order of their bytes in the pieces, pad
    # files left out.
    #
    # @return [Array<Murder::Torrent::File>]
    def files
      __files.map { |path, length| File.new(path, length) }
    end

    # Writes the .torrent atomically (a temporary file beside it, then a
    # rename): a reader never sees half a file.
    #
    # @param path [String, #to_s] where to write it
    # @return [self]
    # @raise [Murder::FileError] when it cannot be written
    # @raise [Murder::InvalidArgument] when `path` names no file (e.g. ends
    #   in `..`)
    def write(path)
      __write(path.to_s)
      self
    end

    # Checks the data at `data_path` (the file, or the directory that holds
    # the torrent's files) against the piece hashes, on every core with the GVL
    # released; the block, interrupts and exceptions work as for {.create}.
    # Missing or short files (or a directory where a file should be) only
    # make their pieces incomplete; a file that is there but cannot be read
    # raises, naming it.
    #
    # @example
    #   torrent.verify("release/") # => [true, true, false, ...]
    #
    # @param data_path [String, #to_s] the file, or the directory whose
    #   contents are the torrent's files
    # @yield [done, total] with the GVL held, about ten times a second and
    #   once at the end
    # @yieldparam done [Integer] bytes checked so far
    # @yieldparam total [Integer] bytes to check in all
    # @return [Array<Boolean>] for each piece, whether it is complete and correct
    # @raise [Murder::FileError] a file of the data cannot be read
    #   (permission denied, an I/O error)
    # @raise [Interrupt, Exception] an interrupt, or what the block raised
    def verify(data_path, &progress)
      __verify(data_path.to_s, &progress)
    end

    # Whether every piece at `data_path` is complete and correct (a
    # {#verify} without progress).
    #
    # @param data_path [String, #to_s] as for {#verify}
    # @return [Boolean]
    def complete?(data_path)
      verify(data_path).all?
    end

    # @return [String] the name, info-hash and size, for `p` and the console
    def inspect
      "#<Murder::Torrent #{name} #{info_hash} #{total_length} bytes, #{piece_count} pieces>"
    end
  end
end
