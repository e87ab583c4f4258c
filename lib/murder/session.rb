# frozen_string_literal: true

require "json"

module Murder
  # What Seeder and Download share: options, the native session, stats.
  class Session
    # +ip+: the address announced to the tracker (default: the local address
    # of the route to it); +port+/+bind+: where peers connect (0: any port);
    # +max_peers+: most connections (nil: the engine's, 16);
    # +upload_limit+/+download_limit+: bytes per second; +peers+: extra
    # "IP:PORT" peers to connect to besides the tracker's.
    def initialize(torrent, path, ip: nil, port: 0, bind: "0.0.0.0", max_peers: nil,
                   upload_limit: nil, download_limit: nil, peers: [])
      @torrent = torrent.is_a?(Torrent) ? torrent : Torrent.load(torrent)
      @path = path.to_s
      @options = [bind.to_s, Integer(port), ip&.to_s, max_peers&.then { |n| Integer(n) },
                  upload_limit&.then { |n| Integer(n) }, download_limit&.then { |n| Integer(n) }, peers.map(&:to_s)]
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
  # torrent). Data goes to "DEST.part" and is renamed to DEST only once every
  # piece is verified; a download started again keeps what it verified.
  class Download < Session
    # Runs until the data is complete and returns a summary Hash. The block,
    # if given, gets a progress Hash about once a second. With
    # +keep_seeding: true+ the session goes on serving after it returns
    # (call #stop later).
    def run(timeout: nil, keep_seeding: false)
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      start_native(false)
      last = [started, stats]
      loop do
        state = native.wait(1.0)
        now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        current = stats
        yield progress(current, last, now) if block_given?
        last = [now, current]
        break if state == "complete"
        raise Error, state.delete_prefix("failed: ") if state.start_with?("failed")
        raise Error, "download timed out after #{timeout} s" if timeout && now - started > timeout
      end
      summary(last.last, Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
    ensure
      stop unless keep_seeding && running?
    end

    private

    def progress(current, (at, previous), now)
      seconds = [now - at, 1e-3].max
      {
        "bytes_done" => current["have_bytes"], "bytes_total" => current["total_bytes"],
        "download_rate" => (current["downloaded"] - previous["downloaded"]) / seconds,
        "upload_rate" => (current["uploaded"] - previous["uploaded"]) / seconds,
        "peers" => current["peers"]
      }
    end

    def summary(stats, seconds)
      {
        "path" => path, "bytes" => stats["total_bytes"], "seconds" => seconds,
        "rate" => stats["total_bytes"] / [seconds, 1e-3].max,
        "downloaded" => stats["downloaded"], "uploaded" => stats["uploaded"], "peers" => stats["peers"]
      }
    end
  end
end
