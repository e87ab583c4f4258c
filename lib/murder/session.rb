# frozen_string_literal: true

require "json"

module Murder
  # What Seeder and Download share: options, the native session, stats.
  class Session
    # +ip+: the address announced to the tracker (default: the local address
    # of the route to it); +port+/+bind+: where peers connect (0: any port);
    # +max_peers+: most connections (nil: the engine's, 16);
    # +upload_limit+/+download_limit+: bytes per second; +peers+: extra
    # "IP:PORT" peers to connect to besides the tracker's. For a download,
    # +reuse+: directories of content this host holds already (earlier
    # releases), matched by content and verified before it counts, brought
    # in as hard links (+reuse_mode: :link+) or copies (+:copy+). For a
    # seeder, +lazy_check: true+ (data a torrent was just made from) skips
    # the check of all the data before serving and checks each piece the
    # first time it is sent instead.
    def initialize(torrent, path, ip: nil, port: 0, bind: "0.0.0.0", max_peers: nil,
                   upload_limit: nil, download_limit: nil, peers: [], reuse: [], reuse_mode: :link, lazy_check: false)
      @torrent = torrent.is_a?(Torrent) ? torrent : Torrent.load(torrent)
      @path = path.to_s
      copy = case reuse_mode.to_s
             when "link" then false
             when "copy" then true
             else raise InvalidArgument, "reuse_mode must be :link or :copy, not #{reuse_mode.inspect}"
             end
      @options = [bind.to_s, Integer(port), ip&.to_s, max_peers&.then { |n| Integer(n) },
                  upload_limit&.then { |n| Integer(n) }, download_limit&.then { |n| Integer(n) }, peers.map(&:to_s),
                  Array(reuse).map(&:to_s), copy, lazy_check ? true : false]
      @native = nil
    end

    attr_reader :torrent, :path

    # The port peers connect to.
    def port
      native.port
    end

    def running?
      !@native.nil? && @native.running?
    end

    # Counters: "downloaded", "uploaded", "have_bytes", "total_bytes",
    # "pieces_have", "piece_count", "peers", "complete", "distributed", ...
    def stats
      JSON.parse(native.stats_json)
    end

    # Announces "stopped" and closes every connection. Safe to call twice.
    def stop
      @native&.stop
      @native = nil
      self
    end

    private

    def native
      @native or raise InvalidArgument, "#{self.class.name.split('::').last.downcase} not started"
    end

    def start_native(seed)
      raise InvalidArgument, "already started" if @native

      @native = NativeSession.start(@torrent, seed, @path, *@options)
    end
  end

  # Seeds a torrent's data (the file, or the directory named like the
  # torrent) until stopped. The data is checked against the torrent first.
  #
  #   seeder = Murder::Seeder.new("release.torrent", "release.tgz", ip: "10.0.0.1").start
  #   ...
  #   seeder.stop
  class Seeder < Session
    # Checks the data and starts serving; returns self.
    def start
      start_native(true)
      self
    end
  end

  # Downloads a torrent to +dest+ (the file, or the directory named like the
  # torrent). Data goes to ".DEST.part" beside it and is renamed to DEST only once every
  # piece is verified; a download started again keeps what it verified.
  class Download < Session
    # Runs until the data is complete and returns the engine's summary, a
    # Hash: "path", "bytes", "reused_bytes", "downloaded", "uploaded",
    # "seconds", "rate", "peers" and "phases" ("check", "swarm", "place"
    # seconds). The block, if given, gets the engine's progress Hash about
    # once a second ("bytes_done", "bytes_total", "reused_bytes",
    # "download_rate", "upload_rate", "peers", ...). With
    # +keep_seeding: true+ the session goes on serving after it returns
    # (call #stop later). Raises Murder::Cancelled when #stop is called from
    # another thread meanwhile, and Murder::Error when the download fails.
    def run(timeout: nil, keep_seeding: false)
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      session = start_native(false)
      loop do
        state = session.wait(1.0)
        yield JSON.parse(session.progress_json) if block_given? && state != "stopped"
        break if state == "complete"
        raise Cancelled, "download stopped" if state == "stopped"
        raise Error, state.delete_prefix("failed: ") if state.start_with?("failed")

        if timeout && Process.clock_gettime(Process::CLOCK_MONOTONIC) - started > timeout
          raise Error, "download timed out after #{timeout} s"
        end
      end
      JSON.parse(session.summary_json(path))
    ensure
      stop unless keep_seeding && running?
    end
  end
end
