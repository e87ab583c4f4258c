# frozen_string_literal: true

require "json"

module Murder
  # The BitTorrent tracker (HTTP `/announce` and `/scrape`, a status page
  # at `/`, `/stats.json`, `/metrics` and `/health`), serving from a native thread
  # inside this Ruby process: the GVL is not held while it serves, so it
  # answers while Ruby threads are busy.
  #
  # Only allowed torrents are tracked: anything else gets a bencoded
  # "failure reason". Several trackers may run in one process. {#allow},
  # {#stats}, {#port} and {#running?} may be called from any thread while it
  # serves; call {#start} and {#stop} from one thread (they are not
  # synchronized with each other).
  #
  # @example
  #   tracker = Murder::Tracker.new(port: 0, bind: "127.0.0.1").start
  #   tracker.allow(Murder::Torrent.load("release.torrent"))
  #   tracker.port   # => 41234 (the real port when 0 was asked)
  #   tracker.stats  # => {"torrents" => [{"name" => "release", "seeds" => 1, ...}]}
  #   tracker.stop
  class Tracker
    # The port a tracker serves on unless told otherwise (Murder's).
    DEFAULT_PORT = 8998

    attr_reader :bind, :interval

    # @!attribute [r] bind
    #   @return [String] the IP address served on, as given

    # @!attribute [r] interval
    #   @return [Integer] seconds between announces asked of peers

    # Only records the settings: {#start} checks them and starts serving.
    #
    # @param port [Integer] where to serve (0: any free port; see {#port})
    # @param bind [String] the IP address to serve on ({EVERY_ADDRESS}: every
    #   address, IPv6 and IPv4)
    # @param interval [Integer] seconds between announces, from 1 to 3600
    #   (Murder's 15)
    # @param peer_timeout [Integer, nil] seconds after which a silent peer is
    #   forgotten (nil: 2 × `interval`)
    # @param numwant [Integer] peers handed out when a client names no number
    # @param max_peers_per_address [Integer] peers one address (other than
    #   this machine's) may add to a swarm; raise it when more hosts reach
    #   the tracker through one NAT address
    # @param allow_dir [String, nil] a directory of .torrent files to allow,
    #   re-read when it changes (unreadable .torrent files in it are skipped
    #   with a warning)
    # @param operator_token [String, nil] with `?token=` this value, the
    #   pages (`/`, `/stats.json`, `/metrics`, `/scrape`) show every torrent,
    #   closed swarms included; at least 16 printable characters
    # @raise [ArgumentError, TypeError] when `port`, `interval`,
    #   `peer_timeout`, `numwant` or `max_peers_per_address` is not an
    #   integer (`Integer()`)
    def initialize(port: DEFAULT_PORT, bind: EVERY_ADDRESS, interval: 15, peer_timeout: nil, numwant: 50,
                   max_peers_per_address: 256, allow_dir: nil, operator_token: nil)
      @port = Integer(port)
      @bind = bind.to_s
      @interval = Integer(interval)
      @peer_timeout = peer_timeout&.then { |t| Integer(t) }
      @numwant = Integer(numwant)
      @max_peers_per_address = Integer(max_peers_per_address)
      @allow_dir = allow_dir&.to_s
      @operator_token = operator_token&.to_s
      @server = nil
    end

    # Binds the port, loads `allow_dir` and starts serving on a native
    # thread. It reads every .torrent in `allow_dir` first (each parsed and
    # hashed, so a directory of many large torrents takes a while) with the
    # GVL released: other Ruby threads run meanwhile, and an interrupt
    # raises once the reading is done (the tracker then does not start).
    #
    # @return [self]
    # @raise [Murder::InvalidArgument] when the tracker is started already,
    #   `bind` is not an IP address, or a setting cannot work (`interval`
    #   outside 1..3600, `peer_timeout`, `numwant` or `max_peers_per_address`
    #   0, `allow_dir` not a directory)
    # @raise [Murder::FileError] when the port cannot be bound ("Address
    #   already in use") or `allow_dir` cannot be read
    # @raise [RangeError] when `port` is outside 0..65535 or a setting is
    #   negative
    def start
      raise InvalidArgument, "tracker already started" if @server

      @server = TrackerServer.start(@bind, @port, @interval, @peer_timeout, @numwant, @max_peers_per_address, @allow_dir,
                                    @operator_token)
      self
    end

    # @return [Integer] the port served on: the real one when 0 was asked;
    #   before {#start} and after {#stop}, the port that was asked
    def port
      # One read of @server: a {#stop} on another thread may clear it.
      @server&.port || @port
    end

    # @return [Boolean] whether the tracker is started and its thread still
    #   serves
    def running?
      @server&.running? || false
    end

    # The announce URL for a host name or address that peers can reach.
    #
    # @example
    #   tracker.announce_url("10.0.0.1") # => "http://10.0.0.1:8998/announce"
    #
    # @param host [String] the host peers announce to (default: `bind`, or
    #   127.0.0.1 when bound to every address); an IPv6 address is bracketed
    # @return [String]
    def announce_url(host = [EVERY_ADDRESS, "0.0.0.0"].include?(@bind) ? "127.0.0.1" : @bind)
      host = "[#{host}]" if host.include?(":") && !host.start_with?("[")
      "http://#{host}:#{port}/announce"
    end

    # Allows a torrent: announces for it are tracked from now on.
    #
    # @param torrent_or_hex [Murder::Torrent, String] a torrent, the path of
    #   a .torrent file, or a 40-digit hex info-hash (a String that is not
    #   an existing file and is 40 hex digits counts as an info-hash)
    # @return [String] the torrent's hex info-hash
    # @raise [Murder::InvalidArgument] when the tracker is not started
    # @raise [Murder::FileError] when a path (or anything that is not a hex
    #   info-hash) cannot be read
    # @raise [Murder::InvalidTorrent] when the file is not a valid torrent
    # @param secret [String, nil] a closed swarm (a {Murder::Torrent} or a
    #   .torrent path only): announces count only with the token derived
    #   from this secret (64 hex digits), and only holders of the token or
    #   the operator see the torrent in scrapes and on the pages. A closed
    #   swarm stays closed when allowed again without a secret (or when its
    #   file turns up in the allow directory); another secret replaces its own
    # @raise [Murder::InvalidArgument] also when `secret` is not 64 hex
    #   digits, or is given with a bare info-hash
    def allow(torrent_or_hex, secret: nil)
      server = @server or raise InvalidArgument, "start the tracker first"
      if secret
        if !torrent_or_hex.is_a?(Torrent) && info_hash?(torrent_or_hex)
          raise InvalidArgument, "a closed swarm needs the torrent (a Murder::Torrent or a .torrent path), " \
                                 "not the bare info-hash #{torrent_or_hex}"
        end
        torrent = torrent_or_hex.is_a?(Torrent) ? torrent_or_hex : Torrent.load(torrent_or_hex.to_s)
        return server.allow_closed(torrent, secret.to_s)
      end

      case torrent_or_hex
      when Torrent then server.allow_torrent(torrent_or_hex)
      else
        # A path need not be UTF-8 (the native side takes text for an
        # info-hash): anything that is not a hex info-hash is loaded as a path.
        info_hash?(torrent_or_hex) ? server.allow(torrent_or_hex.to_s) : server.allow_torrent(Torrent.load(torrent_or_hex.to_s))
      end
    end

    # What `/stats.json` serves: every allowed torrent with its peers.
    #
    # @return [Hash] `{"torrents" => [...]}`, each torrent a Hash of
    #   "info_hash", "name", "total_length" and "data_length" (the
    #   torrent's length, and that without pad files: what each host holds
    #   and "left" counts down from; both nil when allowed by info-hash),
    #   "seeds", "downloaders", "completed", "seconds", "completed_at",
    #   "bytes_left" and "peers", each peer a Hash of "ip", "port", "left",
    #   "uploaded", "downloaded", "percent_done", "seconds_since_announce"
    #   and "rate"
    # @raise [Murder::InvalidArgument] when the tracker is not started
    def stats
      server = @server or raise InvalidArgument, "start the tracker first"
      JSON.parse(server.stats_json)
    end

    # Stops serving and returns once the port is closed, waiting with the
    # GVL released. Safe to call twice, and before {#start}.
    #
    # @return [self]
    # @raise [Murder::FileError] when the server had failed with an I/O error
    # @raise [Murder::Error] when the tracker's thread had panicked
    def stop
      @server&.stop
      self
    ensure
      # Forgotten even when the stop raised (an interrupt, a failed server):
      # its native half is spent either way.
      @server = nil
    end

    private

    # @api private
    # @return [Boolean] whether `spec` is a hex info-hash (not a path)
    def info_hash?(spec)
      text = spec.to_s
      text.ascii_only? && TrackerServer.names_info_hash?(text)
    end
  end
end
