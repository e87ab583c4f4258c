# frozen_string_literal: true

RSpec.describe Murder::Tracker do
  # Torrents in the allow_dir of the GVL example: enough that reading them
  # takes well over 0.1 s.
  ALLOW_DIR_FILES = 20_000
  let(:torrent) { Murder::Torrent.create(sample_file, tracker: "127.0.0.1:8998") }

  def announce(port, hash_hex, peer:, left:, extra: "")
    hash = [hash_hex].pack("H*").bytes.map { |b| format("%%%02X", b) }.join
    query = "info_hash=#{hash}&peer_id=-MU0100-#{peer.to_s.rjust(12, '0')}&port=#{6000 + peer}&left=#{left}#{extra}"
    http_get(port, "/announce?#{query}").body
  end

  it "starts at once on a free port, tracks allowed torrents and stops, freeing the port" do
    tracker = described_class.new(port: 0, bind: "127.0.0.1", interval: 7).start
    port = tracker.port
    expect(port).to be > 0
    expect(tracker).to be_running
    expect(tracker.allow(torrent)).to eq(torrent.info_hash)
    expect(announce(port, torrent.info_hash, peer: 1, left: 0)).to start_with("d8:completei1e10:incompletei0e8:intervali7e")
    announce(port, torrent.info_hash, peer: 2, left: 1000, extra: "&ip=10.1.1.2")
    stats = tracker.stats
    entry = stats["torrents"].first
    expect(entry).to include("name" => "app.tgz", "info_hash" => torrent.info_hash, "seeds" => 1, "downloaders" => 1,
                             "total_length" => 1_500_000, "bytes_left" => 1000)
    expect(entry["peers"].map { |p| p["ip"] }).to contain_exactly("127.0.0.1", "10.1.1.2")
    served = JSON.parse(http_get(port, "/stats.json").body)["torrents"].first
    keys = %w[info_hash name total_length seeds downloaders completed bytes_left]
    expect(served.slice(*keys)).to eq(entry.slice(*keys))
    expect(http_get(port, "/").body).to include("murder tracker", "/stats.json") # the dashboard (dashboard_spec.rb)
    tracker.stop
    expect(tracker).not_to be_running
    expect { TCPSocket.new("127.0.0.1", port) }.to raise_error(Errno::ECONNREFUSED)
    TCPServer.new("127.0.0.1", port).close # the port is free again
    expect { tracker.stop }.not_to raise_error
  end

  # Rule: by default a tracker answers on every address, IPv6 and IPv4.
  it "serves IPv4 and IPv6 clients by default, and gives an announce URL that brackets IPv6" do
    tracker = described_class.new(port: 0).start
    expect(tracker.bind).to eq("::")
    expect(tracker.announce_url).to eq("http://127.0.0.1:#{tracker.port}/announce")
    expect(Net::HTTP.get_response(URI("http://127.0.0.1:#{tracker.port}/stats.json")).code).to eq("200")
    expect(tracker.announce_url("::1")).to eq("http://[::1]:#{tracker.port}/announce")
    expect(Net::HTTP.get_response(URI(tracker.announce_url("::1").sub("/announce", "/stats.json"))).code).to eq("200")
  ensure
    tracker&.stop
  end

  it "refuses a closed swarm by bare info-hash with an InvalidArgument that says why" do
    tracker = described_class.new(port: 0, bind: "127.0.0.1").start
    expect { tracker.allow(torrent.info_hash, secret: Murder.generate_secret) }
      .to raise_error(Murder::InvalidArgument, /closed swarm needs the torrent.*#{torrent.info_hash}/)
    expect(tracker.stats["torrents"]).to be_empty
  ensure
    tracker&.stop
  end

  it "refuses torrents it was not told to allow" do
    tracker = described_class.new(port: 0, bind: "127.0.0.1").start
    reply = announce(tracker.port, torrent.info_hash, peer: 1, left: 0)
    expect(reply).to eq("d14:failure reason35:torrent not allowed on this trackere")
    expect(tracker.stats["torrents"]).to be_empty
  ensure
    tracker&.stop
  end

  it "allows by hex info-hash or .torrent path, and rejects anything else" do
    tracker = described_class.new(port: 0, bind: "127.0.0.1").start
    path = File.join(tmpdir, "t.torrent")
    torrent.write(path)
    expect(tracker.allow(path)).to eq(torrent.info_hash)
    expect(tracker.allow("AB" * 20)).to eq("ab" * 20)
    expect { tracker.allow("not-a-hash") }.to raise_error(Murder::FileError)
    # A path need not be UTF-8: it raised EncodingError, not a Murder::Error.
    latin1 = File.join(tmpdir, "caf\xE9.torrent".b)
    File.binwrite(latin1, torrent.to_bencode)
    expect(tracker.allow(latin1)).to eq(torrent.info_hash)
    expect { tracker.allow(File.join(tmpdir, "gone\xE9.torrent".b)) }.to raise_error(Murder::FileError)
    expect(tracker.stats["torrents"].size).to eq(2)
  ensure
    tracker&.stop
  end

  it "runs several trackers in one process while Ruby threads keep running" do
    trackers = Array.new(3) { described_class.new(port: 0, bind: "127.0.0.1").start }
    expect(trackers.map(&:port).uniq.size).to eq(3)
    # Ruby itself makes the HTTP requests: the trackers serve without the GVL.
    trackers.each { |t| expect(http_get(t.port, "/health").body).to eq("ok\n") }
  ensure
    trackers&.each(&:stop)
  end

  it "reports a taken port and bad options as Murder errors" do
    first = described_class.new(port: 0, bind: "127.0.0.1").start
    expect { described_class.new(port: first.port, bind: "127.0.0.1").start }
      .to raise_error(Murder::FileError, /Address already in use/)
    expect { described_class.new(bind: "not an ip").start }.to raise_error(Murder::InvalidArgument, /not an IP address/)
    expect { described_class.new(interval: 0).start }.to raise_error(Murder::InvalidArgument)
    expect { described_class.new(port: 0, max_peers_per_address: 0).start }
      .to raise_error(Murder::InvalidArgument, /max peers per address 0/)
  ensure
    first&.stop
  end

  # #start read every .torrent of `allow_dir` with the GVL held: a directory
  # of thousands stood every other Ruby thread still until it was read.
  it "lets other Ruby threads run while #start reads a large allow_dir" do
    dir = File.join(tmpdir, "allow")
    FileUtils.mkdir_p(dir)
    torrent.write(File.join(dir, "0.torrent"))
    bytes = File.binread(File.join(dir, "0.torrent"))
    1.upto(ALLOW_DIR_FILES - 1) { |i| File.binwrite(File.join(dir, "#{i}.torrent"), bytes) }
    ticks = 0
    ticker = Thread.new do
      loop do
        ticks += 1
        sleep 0.002
      end
    end
    sleep 0.05
    before = ticks
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    tracker = described_class.new(port: 0, bind: "127.0.0.1", allow_dir: dir).start
    took = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    during = ticks - before
    ticker.kill
    expect(tracker.stats["torrents"].size).to eq(1)
    # Long enough to tell: the ticker ticks every 2 ms or more.
    expect(took).to be > 0.1
    expect(during).to be >= (took / 0.002 / 4).floor, "#{during} ticks in #{took.round(2)} s"
  ensure
    tracker&.stop
  end
end
