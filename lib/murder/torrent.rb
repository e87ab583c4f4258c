# frozen_string_literal: true

module Murder
  # A BitTorrent v1 torrent (.torrent file), validated when it is read.
  #
  #   torrent = Murder::Torrent.create("release/", tracker: "10.0.0.1:8998") do |done, total|
  #     print "\rhashing #{100 * done / total}%"
  #   end
  #   torrent.write("release.torrent")
  #   Murder::Torrent.load("release.torrent").info_hash # => "57a6..."
  class Torrent
    # One file of the torrent: its path below the torrent's name, joined by "/".
    File = Struct.new(:path, :length)

    class << self
      # Hashes +path+ (a file or a directory) on every core. The block, if
      # given, is called about ten times a second with bytes hashed and bytes
      # in all. Other Ruby threads run while the hashing goes on.
      #
      # +align: true+ (a directory only) starts every file on a piece
      # boundary (BEP 47 pad files), marks executables and keeps symbolic
      # links as links (they must point inside the tree), so that hosts can
      # reuse files they hold already; +hash_cache+ then names a file where
      # what each file hashed to is remembered, so that only changed files
      # are hashed the next time.
      def create(path, tracker:, piece_length: nil, private: false, comment: nil, align: false, hash_cache: nil,
                 &progress)
        __create(path.to_s, tracker.to_s, piece_length, private ? true : false, comment, align ? true : false,
                 hash_cache&.to_s, &progress)
      end

      # Reads a .torrent file.
      def load(path)
        __load(path.to_s)
      end

      # Parses the bytes of a .torrent file.
      def parse(bytes)
        __parse(String(bytes).b)
      end
    end

    # Files in the order of their bytes in the pieces (pad files left out).
    def files
      __files.map { |path, length| File.new(path, length) }
    end

    # Writes the .torrent atomically.
    def write(path)
      __write(path.to_s)
      self
    end

    # Checks the data at +data_path+ (the file, or the directory named like
    # the torrent) and returns, for each piece, whether it is complete and
    # correct. Missing files only make their pieces incomplete.
    def verify(data_path, &progress)
      __verify(data_path.to_s, &progress)
    end

    # True when every piece at +data_path+ is complete.
    def complete?(data_path)
      verify(data_path).all?
    end

    def inspect
      "#<Murder::Torrent #{name} #{info_hash} #{total_length} bytes, #{piece_count} pieces>"
    end
  end
end
