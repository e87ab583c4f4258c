# frozen_string_literal: true

require "json"

module Murder
  # The BitTorrent tracker, serving from a native thread inside this Ruby
  # process (the GVL is not held while it serves).
  #
  #   tracker = Murder::Tracker.new(port: 0, bind: "127.0.0.1").start
  #   tracker.allow(Murder::Torrent.load("release.torrent"))
  #   tracker.port   # => 41234 (the real port when 0 was asked)
  #   tracker.stats  # => {"torrents" => [{"name" => "release", "seeds" => 1, ...}]}
  #   tracker.stop
  #
  # Only allowed torrents are tracked: anything else gets a bencoded
  # "failure reason". Several trackers may run in one process.
  class Tracker
    DEFAULT_PORT = 8998

    attr_reader :bind, :interval

    # +interval+: seconds between announces (Murder's 15); +peer_timeout+:
    # seconds after which a silent peer is forgotten (default 2 × interval);
    # +numwant+: peers handed out when a client names none; +allow_dir+: a
    # directory of .torrent files to allow, re-read when it changes.
    def initialize(port: DEFAULT_PORT, bind: "0.0.0.0", interval: 15, peer_timeout: nil, numwant: 50, allow_dir: nil)
      @port = Integer(port)
      @bind = bind.to_s
      @interval = Integer(interval)
      @peer_timeout = peer_timeout&.then { |t| Integer(t) }
      @numwant = Integer(numwant)
      @allow_dir = allow_dir&.to_s
      @server = nil
    end

    # Starts serving and returns self at once.
    def start
      raise InvalidArgument, "tracker already started" if @server

      @server = TrackerServer.start(@bind, @port, @interval, @peer_timeout, @numwant, @allow_dir)
      self
    end

    # The port served on (the real one when 0 was asked).
    def port
      @server ? @server.port : @port
    end

    def running?
      !@server.nil? && @server.running?
    end

    # The announce URL for a host name or address that peers can reach.
    def announce_url(host = @bind == "0.0.0.0" ? "127.0.0.1" : @bind)
      "http://#{host}:#{port}/announce"
    end

    # Allows a torrent: a Murder::Torrent, a .torrent path, or a hex
    # info-hash. Returns the hex info-hash.
    def allow(torrent_or_hex)
      server = @server or raise InvalidArgument, "start the tracker first"
      case torrent_or_hex
      when Torrent then server.allow_torrent(torrent_or_hex)
      else server.allow(torrent_or_hex.to_s)
      end
    end

    # What /stats.json serves: every allowed torrent with its peers.
    def stats
      server = @server or raise InvalidArgument, "start the tracker first"
      JSON.parse(server.stats_json)
    end

    # Stops serving and frees the port. Safe to call twice.
    def stop
      @server&.stop
      @server = nil
      self
    end
  end
end
