# frozen_string_literal: true

require "json"

module Murder
  # What {Seeder} and {Download} share: options, the native session, stats.
  # Not made directly: make a {Seeder} or a {Download}.
  #
  # A session serves peers from native threads of its own, which never hold
  # the GVL. One session may be shared between threads: while one thread is
  # inside {Download#run}, others may call {#stats}, {#port}, {#running?}
  # and {#stop} (which ends that run with {Murder::Cancelled}); no native
  # lock is held while a call waits. Start it from one thread only.
  #
  # @abstract
  class Session
    # Only records the options: {Seeder#start} or {Download#run} checks
    # them and starts the session.
    #
    # @param torrent [Murder::Torrent, String] the torrent, or the path of a
    #   .torrent file (read here with {Torrent.load})
    # @param path [String, #to_s] the data: the file of a single-file
    #   torrent, or the directory that holds a multi-file torrent's files
    #   (its name need not be the torrent's); for a seeder, what it serves,
    #   for a download, where it goes
    # @param ip [String, nil] the IP address announced to the tracker (nil:
    #   the local address of the route to the tracker)
    # @param port [Integer] where peers connect (0: any free port; see {#port})
    # @param bind [String] the IP address to accept peers on ({EVERY_ADDRESS}:
    #   every address, IPv6 and IPv4)
    # @param max_peers [Integer, nil] most connections, from 1 to 10,000
    #   (nil: the engine's 16)
    # @param upload_limit [Integer, nil] most bytes per second sent, to all
    #   peers together (nil: no limit; 0 is refused)
    # @param download_limit [Integer, nil] most bytes per second received
    #   (nil: no limit; 0 is refused)
    # @param peers [Array<String>, String, nil] extra `"IP:PORT"` peers to connect to
    #   besides the tracker's
    # @param reuse [Array<String>, String] for a download: directories of
    #   content this host holds already (earlier releases), searched
    #   recursively, matched by content and verified before it counts
    # @param reuse_mode [Symbol, String] for a download: how reused files
    #   come in, `:link` (hard links where possible, else copies) or `:copy`
    # @param lazy_check [Boolean] for a seeder of data a torrent was just
    #   made from: skip the check of all the data before serving and check
    #   each piece the first time it is sent instead (a piece that no longer
    #   matches fails the seed)
    # @param secret [String, nil] a closed swarm: the deploy's secret, 64 hex
    #   digits (see {Murder.generate_secret}). Peers must hold it before any
    #   data flows, the wire is encrypted (Noise, AEGIS-128X4), and announces
    #   carry the tracker token derived from it. nil: plain BitTorrent
    # @param announce_to [Array<String>, String] trackers to announce to in
    #   place of the torrent's (`"HOST:PORT"` or an http:// URL; empty: the
    #   torrent's): a seed on a machine the servers reach only through a
    #   relay announces to its own tracker here, with `ip:` the relay's
    # @raise [Murder::InvalidArgument] when `reuse_mode` is neither `:link`
    #   nor `:copy`, `secret` is not 64 hex digits, or a tracker of
    #   `announce_to` is neither HOST:PORT nor a URL (raised by `start`)
    # @raise [Murder::FileError, Murder::InvalidTorrent] when `torrent` is a
    #   path that cannot be read or is not a valid torrent
    # @raise [ArgumentError, TypeError] when `port`, `max_peers` or a limit
    #   is not an integer (`Integer()`)
    def initialize(torrent, path, ip: nil, port: 0, bind: EVERY_ADDRESS, max_peers: nil,
                   upload_limit: nil, download_limit: nil, peers: [], reuse: [], reuse_mode: :link, lazy_check: false,
                   secret: nil, announce_to: [])
      @torrent = torrent.is_a?(Torrent) ? torrent : Torrent.load(torrent)
      @path = path.to_s
      copy = case reuse_mode.to_s
             when "link" then false
             when "copy" then true
             else raise InvalidArgument, "reuse_mode must be :link or :copy, not #{reuse_mode.inspect}"
             end
      @options = [bind.to_s, Integer(port), ip&.to_s, max_peers&.then { |n| Integer(n) },
                  upload_limit&.then { |n| Integer(n) }, download_limit&.then { |n| Integer(n) }, Array(peers).map(&:to_s),
                  Array(reuse).map(&:to_s), copy, lazy_check ? true : false, secret&.to_s,
                  Array(announce_to).map(&:to_s)]
      @native = nil
      @stop_lock = Thread::Mutex.new
    end

    attr_reader :torrent, :path

    # @!attribute [r] torrent
    #   @return [Murder::Torrent] the session's torrent

    # @!attribute [r] path
    #   @return [String] the data's path, as given

    # The port peers connect to (the real one when 0 was asked).
    #
    # @return [Integer]
    # @raise [Murder::InvalidArgument] when the session is not started, or
    #   stopped
    def port
      stopped_is_invalid { native.port }
    end

    # @return [Boolean] whether the session is started, not stopped and not
    #   failed (a {Download} stops when {Download#run} returns, unless it
    #   keeps seeding; a {Seeder} whose data no longer matches or reads
    #   back fails, and ends)
    def running?
      # One read: a {#stop} on another thread may clear it at any moment.
      @native&.running? || false
    end

    # Why the session failed: a {Seeder}'s data that no longer matches
    # the torrent or cannot be read, a disk error. The GVL is held; it
    # returns at once.
    #
    # @return [String, nil] the reason, or nil while it has not failed (and
    #   once it is stopped)
    def failure
      @native&.failure
    end

    # The session's counters now (the GVL is held; it returns at once).
    #
    # @return [Hash] "downloaded", "uploaded" (payload bytes), "have_bytes",
    #   "reused_bytes", "total_bytes", "pieces_have", "piece_count", "peers",
    #   "complete", "distributed" (every piece is held by a connected peer),
    #   "failed_pieces", "banned_peers", "protocol_errors" and "phases"
    #   (a Hash of "check", "swarm", "place" and "wait" seconds; "wait" is
    #   the time staged before the order to place, see `--wait-to-place`)
    # @raise [Murder::InvalidArgument] when the session is not started, or
    #   stopped
    def stats
      stopped_is_invalid { JSON.parse(native.stats_json) }
    end

    # Announces "stopped" to the tracker and closes every connection;
    # returns once the session's threads have ended, waiting with the GVL
    # released. May be called from another thread: a {Download#run} there
    # raises {Murder::Cancelled}. Safe to call twice, and before the
    # session starts (it does nothing then, also while {Seeder#start} or
    # {Download#run} is still checking data: interrupt that thread instead).
    #
    # @return [self]
    def stop
      # A second stop waits for the first (a Ruby mutex gives the GVL up
      # while it waits). A trap handler may not take a mutex: it stops
      # without waiting.
      begin
        @stop_lock.synchronize { stop_native }
      rescue ThreadError
        stop_native
      end
      self
    end

    private

    # @api private
    # @return [void]
    def stop_native
      @native&.stop
    ensure
      # Forgotten even when the stop raised (an interrupt, a failed server):
      # its native half is spent either way.
      @native = nil
    end

    # @api private
    # @return [NativeSession] the running native session
    # @raise [Murder::InvalidArgument] when not started
    def native
      @native or raise InvalidArgument, "#{kind} not started"
    end

    # A stop under way in another thread has taken the native session's
    # runner (the native calls raise Cancelled then, which {Download#run}
    # reads as its end): to a caller of a query it is stopped.
    #
    # @api private
    def stopped_is_invalid
      yield
    rescue Cancelled
      raise InvalidArgument, "#{kind} stopped"
    end

    # @api private
    # @return [String] "seeder" or "download"
    def kind
      self.class.name.split("::").last.downcase
    end

    # Starts the native session (a seed when `seed`), checking the data
    # first with the GVL released; an interrupt cancels the check.
    #
    # @api private
    # @param seed [Boolean] seed (true) or download (false)
    # @return [NativeSession]
    # @raise [Murder::InvalidArgument] when started already
    def start_native(seed)
      raise InvalidArgument, "already started" if @native

      @native = NativeSession.start(@torrent, seed, @path, *@options)
    end
  end

  # Seeds a torrent's data (the file, or the directory that holds the
  # torrent's files) until stopped.
  #
  # @example
  #   seeder = Murder::Seeder.new("release.torrent", "release.tgz", ip: "10.0.0.1").start
  #   # ... hosts download ...
  #   seeder.stop
  class Seeder < Session
    # Checks the data against the torrent (unless `lazy_check: true`), on
    # every core with the GVL released, then starts serving on native
    # threads and returns. An interrupt (Ctrl-C, `Thread#raise`) cancels
    # the check and is raised here.
    #
    # @return [self]
    # @raise [Murder::InvalidArgument] when the seeder is started already,
    #   the data does not fully match the torrent ("cannot seed"), or an
    #   option cannot work (`bind` or `ip` not an IP address, a peer not
    #   `IP:PORT`, `max_peers` outside 1..10,000, a limit of 0)
    # @raise [Murder::FileError] when the port cannot be bound, (with
    #   `lazy_check`) the data is missing, or (without) a file of it is
    #   there but cannot be read; without `lazy_check`, missing data
    #   raises InvalidArgument ("cannot seed")
    # @raise [RangeError] when `port` is outside 0..65535 or a count or
    #   limit is negative
    # @raise [Interrupt] (or what `Thread#raise` raised) when interrupted
    def start
      start_native(true)
      self
    end
  end

  # Downloads a torrent to `path` (DEST below: the file, or the directory
  # that will hold the torrent's files, of any name). Data goes to ".NAME.part" beside it (NAME: DEST's
  # last component) and is renamed
  # to DEST only once every piece is verified and synced; a download started
  # again keeps what it verified there. A DEST that holds this torrent's
  # complete data already is done at once; one that holds anything else is
  # refused and left alone.
  #
  # @example
  #   download = Murder::Download.new("release.torrent", "/srv/app/releases/20240101",
  #                                   reuse: ["/srv/app/releases"])
  #   summary = download.run(timeout: 600) do |p|
  #     print "\r#{p['bytes_done']}/#{p['bytes_total']} bytes, #{p['peers']} peers"
  #   end
  #   summary["downloaded"] # => bytes that came from peers
  class Download < Session
    # Starts the download and runs it until the data is complete, verified
    # and at DEST. Starting checks what is there (".NAME.part", and the
    # `reuse` directories) with the GVL released; then the calling thread
    # waits without the GVL, taking it back every 100 ms to check for
    # interrupts and about once a second to call the block and check the
    # timeout. An interrupt (Ctrl-C, `Thread#raise`) ends the wait (or the
    # check) and is raised here.
    #
    # Unless `keep_seeding` is true, the session is stopped when `run`
    # returns or raises. With `keep_seeding: true` a session that still
    # runs then is left running, serving the data to the other hosts, also
    # after a timeout, a failure or an interrupt: call {#stop} later.
    #
    # @param timeout [Numeric, nil] seconds after which the download fails
    #   (checked about once a second; nil: none, though the engine fails a
    #   download that receives nothing for 60 s, whose missing pieces no
    #   peer holds, or that no tracker answered and no peer reached for 15 s)
    # @param keep_seeding [Boolean] leave the session serving (see above)
    # @yield [progress] about once a second, with the GVL held
    # @yieldparam progress [Hash] the engine's progress report: "event"
    #   ("progress"), "bytes_done", "bytes_total", "reused_bytes",
    #   "downloaded", "uploaded", "download_rate", "upload_rate" (bytes per
    #   second), "peers", "seconds"
    # @return [Hash] the engine's summary: "event" ("complete"), "path",
    #   "bytes", "reused_bytes", "downloaded", "uploaded", "seconds", "rate",
    #   "peers", "phases" (a Hash of "check", "swarm", "place" and "wait"
    #   seconds) and "protocol_errors"
    # @raise [Murder::Cancelled] when {#stop} is called from another thread
    #   meanwhile
    # @raise [Murder::Error] when the download fails (the message names why)
    #   or times out
    # @raise [Murder::InvalidArgument] when the download is started already,
    #   DEST exists and is not this torrent's data, or an option cannot work
    #   (as for {Seeder#start})
    # @raise [Murder::FileError] when the data cannot be written or read, or
    #   the port cannot be bound
    # @raise [RangeError] as for {Seeder#start}
    # @raise [Interrupt, Exception] an interrupt, or what the block raised
    def run(timeout: nil, keep_seeding: false, &block)
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      # Outside the `ensure`: a second `run` raises without stopping the
      # session the first one started.
      session = start_native(false)
      run_started(session, started, timeout, keep_seeding, &block)
    end

    private

    # The rest of {#run}, once its session started: stopped at the end
    # unless it is to keep seeding.
    def run_started(session, started, timeout, keep_seeding)
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
