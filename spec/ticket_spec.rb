# frozen_string_literal: true

# The deploy ticket as a difference from the last deploy's torrent
# (ext/murder-core/src/ticket_delta.rs, ext/murder-cli/src/ticket.rs): a
# host keeps each ticket's torrent (`murder peer - --ticket-base FILE`) and
# decodes the next one against it; a host without those very bytes refuses
# before it does anything, so the deploy tool sends it the whole torrent.
require "murder/remote"

RSpec.describe "a deploy ticket" do
  # One host's `murder peer -` with `ticket` on its standard input.
  def peer(ticket, dest, base)
    Open3.capture2e(MURDER_BIN, "peer", "-", dest, "--ip", "127.0.0.1", "--bind", "127.0.0.1", "--linger", "0",
                    "--progress", "none", "--ticket-base", base, stdin_data: ticket)
  end

  # Release `name` of a tree, tracked and seeded here while the block runs.
  def serve(tree, tracker)
    torrent = Murder::Torrent.create(tree, tracker: "127.0.0.1:#{tracker.port}", align: true)
    tracker.allow(torrent)
    seeder = Murder::Seeder.new(torrent, tree, ip: "127.0.0.1", bind: "127.0.0.1").start
    yield torrent
  ensure
    seeder&.stop
  end

  it "is kept on the deployer readable by its owner alone" do
    kept = File.join(tmpdir, "deployer/ticket-base.torrent")
    Murder::Remote.write_atomically(kept, "d4:infodee")
    expect(File.binread(kept)).to eq("d4:infodee")
    expect(File.stat(kept).mode & 0o077).to eq(0)
  end

  it "leaves no partial file behind when it cannot be kept" do
    kept = File.join(tmpdir, "deployer/ticket-base.torrent")
    FileUtils.mkdir_p(kept) # a directory in the way: the rename fails
    expect { Murder::Remote.write_atomically(kept, "d4:infodee") }.to raise_error(SystemCallError)
    expect(Dir.children(File.dirname(kept))).to eq(["ticket-base.torrent"])
  end

  it "comes as a few KB of difference to a host that kept the last one, and whole to a host that did not" do
    tracker = Murder::Tracker.new(port: 0, bind: "127.0.0.1", interval: 1).start
    tree_a = sample_tree("release-a", files: 400)
    tree_b = File.join(tmpdir, "release-b")
    FileUtils.cp_r(tree_a, tree_b)
    File.write(File.join(tree_b, "changed.txt"), "release b\n")
    base = File.join(tmpdir, "host/murder/run/ticket-base.torrent")

    first = nil
    serve(tree_a, tracker) do |torrent|
      first = torrent.to_bencode
      out, status = peer(Murder::Remote.ticket(first), File.join(tmpdir, "host/releases/a"), base)
      expect(status).to be_success, out
    end
    # The host kept the torrent it was sent (its directory made for it),
    # readable by its owner alone: it tells the release's names and hashes.
    expect(File.binread(base)).to eq(first)
    expect(File.stat(base).mode & 0o077).to eq(0)

    serve(tree_b, tracker) do |torrent|
      whole = Murder::Remote.ticket(torrent.to_bencode)
      difference = Murder::Remote.ticket(torrent.to_bencode, base: first)
      expect(difference.lines.first).to include('"encoding":"zstd-delta"')
      expect(difference.bytesize).to be < whole.bytesize / 10

      # A host holding other bytes than the base, and one holding none,
      # refuse it by name, before writing anything.
      other_base = File.join(tmpdir, "other/ticket-base.torrent")
      FileUtils.mkdir_p(File.dirname(other_base))
      File.binwrite(other_base, first.sub("release-a", "release-x"))
      [other_base, File.join(tmpdir, "new-host/ticket-base.torrent")].each do |kept|
        dest = File.join(File.dirname(kept), "releases/b")
        out, status = peer(difference, dest, kept)
        expect(status).not_to be_success
        expect(out).to include(Murder::Remote::BASE_MISSING)
        expect(File.exist?(dest)).to be(false)
        expect(Dir.exist?(File.dirname(dest))).to be(false)
      end

      # The host that kept the base takes the difference, and keeps the new torrent.
      dest = File.join(tmpdir, "host/releases/b")
      out, status = peer(difference, dest, base)
      expect(status).to be_success, out
      expect(system("diff", "-r", tree_b, dest)).to be(true)
      expect(File.binread(base)).to eq(torrent.to_bencode)
    end
  ensure
    tracker&.stop
  end
end

RSpec.describe Murder::Remote::Conversation do
  it "sends the ticket when murder's prompt arrives in pieces" do
    barrier = Murder::Remote::Barrier.new(1)
    conversation = described_class.new("TICKET", barrier, "h1")
    ch = FakeChannel.new
    prompt = Murder::Remote::PROMPT
    conversation.on_data(nil, :stderr, "a log line\n#{prompt[0, 20]}", ch)
    expect(ch.sent).to eq([])
    conversation.on_data(nil, :stderr, "#{prompt[20..]}\n", ch)
    expect(ch.sent).to eq(["TICKET"])
    conversation.on_data(nil, :stdout, %({"event":"staged"}\n), ch)
    expect(ch.sent).to eq(%W[TICKET place\n])
    expect(ch.closed).to be(true)
  end

  it "tells a host that has not staged to abort, and lets a host that staged meanwhile vote" do
    barrier = Murder::Remote::Barrier.new(2)
    downloading = described_class.new("TICKET", barrier, "h1")
    staged = described_class.new("TICKET", barrier, "h2")
    a = FakeChannel.new
    b = FakeChannel.new
    [[downloading, a], [staged, b]].each { |c, ch| c.on_data(nil, :stderr, "#{Murder::Remote::PROMPT}\n", ch) }
    downloading.abort!
    staged.abort!
    downloading.on_data(nil, :stdout, %({"event":"progress"}\n), a)
    expect(a.sent).to eq(%W[TICKET abort\n])
    expect(a.closed).to be(true)
    # Its report says staged: it votes yes and waits for the others.
    voter = Thread.new { staged.on_data(nil, :stdout, %({"event":"staged"}\n), b) }
    sleep 0.01 until voter.status == "sleep" || !voter.alive?
    expect(b.sent).to eq(["TICKET"])
    barrier.vote("h1", false)
    voter.join(5)
    expect(b.sent).to eq(%W[TICKET abort\n]) # h1 failed: no host places
  end

  it "without a barrier, tells a host to place as soon as it staged, and to abort before" do
    placing = described_class.new("TICKET", nil, "h1")
    stopped = described_class.new("TICKET", nil, "h2")
    a = FakeChannel.new
    b = FakeChannel.new
    [[placing, a], [stopped, b]].each { |c, ch| c.on_data(nil, :stderr, "#{Murder::Remote::PROMPT}\n", ch) }
    placing.on_data(nil, :stdout, %({"event":"staged"}\n), a)
    expect(a.sent).to eq(%W[TICKET place\n])
    stopped.abort!
    stopped.on_data(nil, :stdout, %({"event":"progress"}\n), b)
    expect(b.sent).to eq(%W[TICKET abort\n])
    expect([a.closed, b.closed]).to eq([true, true])
  end
end
