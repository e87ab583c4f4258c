# frozen_string_literal: true

# The closed swarm the deploy strategy uses (ext/murder-core/src/secure.rs),
# against an outsider on the same network: one who can reach the tracker
# and the hosts and speaks standard BitTorrent (libtorrent), but was not
# handed the deploy's secret over SSH.
require "murder/remote"

RSpec.describe "a closed swarm" do
  it "tells an outsider nothing, sends it no byte, and completes between holders" do
    operator = SecureRandom.hex(16)
    tracker = Murder::Tracker.new(port: 0, bind: "127.0.0.1", interval: 1, operator_token: operator).start
    tree = sample_tree("release-2026", files: 30)
    torrent = Murder::Torrent.create(tree, tracker: "127.0.0.1:#{tracker.port}", align: true)
    secret = Murder.generate_secret
    tracker.allow(torrent, secret: secret)
    seeder = Murder::Seeder.new(torrent, tree, ip: "127.0.0.1", bind: "127.0.0.1", secret: secret).start

    # A host of the deploy: the ticket, with the secret, on its stdin.
    dest = File.join(tmpdir, "host/release-2026")
    ticket = Murder::Remote.ticket(torrent.to_bencode, secret: secret)
    out, status = Open3.capture2e(MURDER_BIN, "peer", "-", dest, "--ip", "127.0.0.1", "--bind", "127.0.0.1",
                                  "--linger", "0", "--progress", "none", stdin_data: ticket)
    expect(status).to be_success, out
    expect(system("diff", "-r", tree, dest)).to be(true)
    expect(tracker.stats["torrents"].first["completed"]).to eq(1)

    # Every endpoint, as the outsider asks: nothing that names the release.
    secrets_of_the_release = [torrent.info_hash, torrent.name, seeder.port.to_s, "127.0.0.1:"]
    hash_bytes = [torrent.info_hash].pack("H*")
    { "/" => nil, "/stats.json" => nil, "/metrics" => nil, "/scrape" => nil,
      "/scrape?info_hash=#{CGI.escape(hash_bytes)}" => nil,
      "/announce?info_hash=#{CGI.escape(hash_bytes)}&peer_id=-XX0001-outsider0000&port=6881&uploaded=0" \
      "&downloaded=0&left=1&ip=10.9.9.9" => "torrent not allowed" }.each do |path, expected|
      body = http_get(tracker.port, path).body
      secrets_of_the_release.each { |s| expect(body).not_to include(s), "#{path} shows #{s}: #{body[0, 300]}" }
      expect(body).to include(expected) if expected
    end
    # The reflected address was not recorded: only authenticated announces count.
    expect(tracker.stats["torrents"].first["peers"].map { |p| p["ip"] }).not_to include("10.9.9.9")
    # The operator's token shows it all.
    expect(http_get(tracker.port, "/stats.json?token=#{operator}").body).to include(torrent.info_hash)

    # libtorrent, handed the .torrent and the seed's address anyway.
    torrent_file = File.join(tmpdir, "leaked.torrent")
    torrent.write(torrent_file)
    out = libtorrent("probe", torrent_file, File.join(tmpdir, "outsider"), free_port.to_s,
                     "127.0.0.1:#{seeder.port}", "4")
    expect(out).to match(/^downloaded 0 progress 0\.000$/)
    expect(Dir.glob(File.join(tmpdir, "outsider", "**", "*")).select { |f| File.file?(f) && File.size(f).positive? })
      .to be_empty
  ensure
    seeder&.stop
    tracker&.stop
  end

  it "the same probe reads an open swarm (the outsider is a working client)" do
    tracker = Murder::Tracker.new(port: 0, bind: "127.0.0.1", interval: 1).start
    tree = sample_tree("release-open", files: 10)
    torrent = Murder::Torrent.create(tree, tracker: "127.0.0.1:#{tracker.port}", align: true)
    tracker.allow(torrent)
    seeder = Murder::Seeder.new(torrent, tree, ip: "127.0.0.1", bind: "127.0.0.1").start
    torrent_file = File.join(tmpdir, "open.torrent")
    torrent.write(torrent_file)
    out = libtorrent("probe", torrent_file, File.join(tmpdir, "outsider"), free_port.to_s,
                     "127.0.0.1:#{seeder.port}", "4")
    expect(out).to match(/^downloaded [1-9]\d* progress 1\.000$/)
  ensure
    seeder&.stop
    tracker&.stop
  end

  # Rule C3 (STATE.md): connections that never handshake. An outsider needs
  # no secret to open them; unbounded, they take the descriptors the seed's
  # data files need, and a file it cannot open fails the seed (rule W1).
  it "keeps serving a holder through an outsider's flood of connections that never handshake" do
    tracker = Murder::Tracker.new(port: 0, bind: "127.0.0.1", interval: 1).start
    tree = sample_tree("release-flood", files: 300)
    torrent = Murder::Torrent.create(tree, tracker: "127.0.0.1:#{tracker.port}", align: true)
    secret = Murder.generate_secret
    tracker.allow(torrent, secret: secret)
    torrent_file = File.join(tmpdir, "flood.torrent")
    torrent.write(torrent_file)
    secret_file = File.join(tmpdir, "secret")
    File.write(secret_file, secret, perm: 0o600)
    seed_port = free_port
    # 400 descriptors: room for the seed's cache of open files (256) and
    # its sockets, not for a flood as well.
    seed = spawn_logged("bash", "-c", 'ulimit -n 400 && exec "$@"', "bash", MURDER_BIN, "seed", torrent_file, tree,
                        "--ip", "127.0.0.1", "--bind", "127.0.0.1", "--port", seed_port, "--secret-file", secret_file,
                        "--progress", "none", log: File.join(tmpdir, "seed.log"))
    eventually { tracker.stats["torrents"].first["seeds"] == 1 }

    open_sockets = []
    connects = ended = 0 # the flood's connections, and those the seed ended
    flood = Thread.new do
      until Thread.current[:stop]
        begin
          if open_sockets.size < 300
            open_sockets << TCPSocket.new("127.0.0.1", seed_port)
            connects += 1
          end
        rescue SystemCallError
          nil # the seed is gone: the example reports it
        end
        open_sockets.reject! do |s|
          (s.read_nonblock(1, exception: false).nil? && s.close.nil?).tap { |gone| ended += 1 if gone }
        rescue SystemCallError
          s.close
          ended += 1
          true
        end
        sleep 0.005
      end
    end
    sleep 1 # the flood is under way before the holder comes

    dest = File.join(tmpdir, "host/release-flood")
    ticket = Murder::Remote.ticket(torrent.to_bencode, secret: secret)
    out, status = Open3.capture2e(MURDER_BIN, "peer", "-", dest, "--ip", "127.0.0.1", "--bind", "127.0.0.1",
                                  "--linger", "0", "--progress", "none", stdin_data: ticket)
    expect(status).to be_success, "#{out}\nseed: #{File.read(File.join(tmpdir, "seed.log"))}"
    expect(system("diff", "-r", tree, dest)).to be(true)
    expect(Process.waitpid(seed, Process::WNOHANG)).to be_nil, File.read(File.join(tmpdir, "seed.log"))
    # The flood went past the limit (400 / 8 = 50 in their handshake), and
    # the seed ended the oldest: else the example showed nothing.
    expect(connects).to be > 100
    expect(ended).to be > 50
  ensure
    flood&.[]=(:stop, true)
    flood&.join
    open_sockets&.each(&:close)
    tracker&.stop
  end
end
