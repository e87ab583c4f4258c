# frozen_string_literal: true

require "murder/remote"

RSpec.describe "Murder::Seeder and Murder::Download" do
  let(:tracker) { Murder::Tracker.new(port: 0, bind: "127.0.0.1", interval: 2).start }
  after { tracker.stop }

  def release(dir_name = "release")
    root = sample_tree(dir_name, files: 30)
    torrent = Murder::Torrent.create(root, tracker: "127.0.0.1:#{tracker.port}", piece_length: 32 * 1024)
    tracker.allow(torrent)
    [root, torrent]
  end

  it "downloads a tree from a seeder through the tracker, reporting progress" do
    root, torrent = release
    seeder = Murder::Seeder.new(torrent, root, ip: "127.0.0.1", bind: "127.0.0.1").start
    expect(seeder.port).to be > 0
    expect(seeder.stats).to include("complete" => true, "pieces_have" => torrent.piece_count)
    dest = File.join(tmpdir, "host/release")
    updates = []
    summary = Murder::Download.new(torrent, dest, ip: "127.0.0.1", bind: "127.0.0.1").run { |p| updates << p }
    expect(summary).to include("path" => dest, "bytes" => torrent.total_length)
    expect(summary["downloaded"]).to be >= torrent.total_length
    expect(updates.last).to include("bytes_done" => torrent.total_length, "bytes_total" => torrent.total_length)
    expect(torrent.verify(dest)).to all(be(true))
    expect(Dir.exist?(File.join(File.dirname(dest), ".#{File.basename(dest)}.part"))).to be(false)
    expect(seeder.stats["uploaded"]).to be >= torrent.total_length
  ensure
    seeder&.stop
  end

  # STATE.md, session state: the owner of a failed seed ends it.
  # A deployer watches its seed (Murder::Remote::Conversations#watch): once
  # the seed fails, every host is told to abort, where each waited out its
  # stall timeout and the deploy's error named the hosts, not the seed.
  it "ends a seeder whose data is cut short once a peer asks for it, says why, and its watcher aborts the hosts" do
    root, torrent = release
    seeder = Murder::Seeder.new(torrent, root, ip: "127.0.0.1", bind: "127.0.0.1", lazy_check: true).start
    expect(seeder).to be_running
    expect(seeder.failure).to be_nil
    conversations = Murder::Remote::Conversations.new
    host = conversations.start("TICKET", Murder::Remote::Barrier.new(2), "h1")
    channel = FakeChannel.new
    host.on_data(nil, :stderr, "#{Murder::Remote::PROMPT}\n", channel)
    watch = conversations.watch(seeder, every: 0.05)
    Dir[File.join(root, "**/*.rb")].each { |f| File.truncate(f, 10) }
    download = Murder::Download.new(torrent, File.join(tmpdir, "host/release"), ip: "127.0.0.1", bind: "127.0.0.1")
    runner = Thread.new { download.run rescue nil } # it stalls: its only source failed
    eventually(timeout: 10) { !seeder.running? }
    expect(seeder.failure).to match(/\.rb/)
    eventually(timeout: 5) { conversations.aborted }
    expect(conversations.aborted).to eq(seeder.failure)
    # The host hears it with its next report; one that starts later at once.
    host.on_data(nil, :stdout, %({"event":"progress"}\n), channel)
    expect(channel.sent).to eq(%W[TICKET abort\n])
    late = conversations.start("TICKET", Murder::Remote::Barrier.new(2), "h2")
    late.on_data(nil, :stderr, "#{Murder::Remote::PROMPT}\n", channel)
    late.on_data(nil, :stdout, %({"event":"progress"}\n), channel)
    expect(channel.sent.last).to eq("abort\n")
  ensure
    watch&.kill
    download&.stop
    runner&.join(10)
    seeder&.stop
  end

  it "keeps Ruby threads running while it downloads, and can keep seeding afterwards" do
    root, torrent = release
    seeder = Murder::Seeder.new(torrent, root, ip: "127.0.0.1", bind: "127.0.0.1", upload_limit: 2_000_000).start
    ticks = 0
    counter = Thread.new { loop { ticks += 1; sleep 0.001 } }
    download = Murder::Download.new(torrent, File.join(tmpdir, "a/release"), ip: "127.0.0.1", bind: "127.0.0.1")
    summary = download.run(keep_seeding: true)
    counter.kill
    expect(ticks).to be > summary["seconds"] * 1000 / 10
    expect(download).to be_running
    # A second run refuses, and leaves the first one's session seeding.
    expect { download.run }.to raise_error(Murder::InvalidArgument, /already started/)
    expect(download).to be_running
    # A third host finishes from the first downloader alone.
    seeder.stop
    other = Murder::Download.new(torrent, File.join(tmpdir, "b/release"), ip: "127.0.0.1", bind: "127.0.0.1",
                                 peers: ["127.0.0.1:#{download.port}"])
    other.run(timeout: 30)
    expect(torrent.verify(File.join(tmpdir, "b/release"))).to all(be(true))
  ensure
    download&.stop
    seeder&.stop
  end

  it "refuses to seed data that does not match, and bad options, with Murder errors" do
    root, torrent = release
    File.write(File.join(root, "README"), "changed")
    expect { Murder::Seeder.new(torrent, root).start }.to raise_error(Murder::InvalidArgument, /cannot seed/)
    expect { Murder::Seeder.new(torrent, root, bind: "nowhere").start }.to raise_error(Murder::InvalidArgument, /bind/)
    expect { Murder::Download.new(torrent, File.join(tmpdir, "x"), peers: ["bad"]).run }
      .to raise_error(Murder::InvalidArgument, /expected IP:PORT/)
    # One peer or none need no array (main: NoMethodError `map' for a String or nil).
    expect { Murder::Download.new(torrent, File.join(tmpdir, "x"), peers: "bad").run }
      .to raise_error(Murder::InvalidArgument, /expected IP:PORT/)
    expect { Murder::Seeder.new(torrent, root, peers: nil) }.not_to raise_error
  end

  # Settings are checked once, by the engine, for Ruby and the command alike
  # (main clamped max_peers 0 to 1 in Ruby and ran a session that talks to
  # nobody from the command; an upload limit of 0 became 1 byte a second).
  it "refuses settings that cannot work with the engine's message" do
    data = sample_file
    torrent = Murder::Torrent.create(data, tracker: "127.0.0.1:9")
    expect { Murder::Seeder.new(torrent, data, max_peers: 0).start }.to raise_error(Murder::InvalidArgument, /max peers 0/)
    expect { Murder::Seeder.new(torrent, data, upload_limit: 0).start }
      .to raise_error(Murder::InvalidArgument, /upload limit 0/)
    torrent.write(File.join(tmpdir, "t.torrent"))
    { "--max-peers" => /max peers 0/, "--upload-limit" => /upload limit 0/, "--download-limit" => /download limit 0/ }
      .each do |flag, message|
        status, _out, err = run_failing(MURDER_BIN, "seed", "t.torrent", data, flag, "0")
        expect(status.exitstatus).to eq(1)
        expect(err).to match(/\Amurder: /).and match(message)
      end
    status, _out, err = run_failing(MURDER_BIN, "tracker", "--port", "0", "--interval", "0")
    expect(status.exitstatus).to eq(1)
    expect(err).to match(/interval 0 s/)
    status, _out, err = run_failing(MURDER_BIN, "tracker", "--port", "0", "--max-peers-per-address", "0")
    expect([status.exitstatus, err]).to match([1, /\Amurder: max peers per address 0: /])
    # Above tokio's semaphore limit: a panic once the tracker said it was up.
    status, out, err = run_failing(MURDER_BIN, "tracker", "--port", "0", "--max-connections", "3000000000000000000")
    expect([status.exitstatus, out, err]).to match([1, "", /\Amurder: max connections 3000000000000000000: /])
  end
end
