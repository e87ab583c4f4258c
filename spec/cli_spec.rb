# frozen_string_literal: true

require "murder/progress"

RSpec.describe "the murder command" do
  it "prints the info-hash, size, pieces and speed after making a torrent" do
    out = murder("make-torrent", sample_tree, "--tracker", "127.0.0.1:8998", "-o", "r.torrent")
    hash = JSON.parse(murder("info", "--json", "r.torrent"))["info_hash"]
    expect(out).to include("info-hash  #{hash}")
    expect(out).to match(/pieces +\d+ of 32\.0 KiB/)
    expect(out).to match(%r{hashed in +[\d.]+ s \([\d.]+ \w+/s\)})
  end

  # A second run hashed the first one's .torrent (and the hash cache) as
  # part of the tree, then replaced it: the torrent never matched its data.
  it "leaves the .torrent it writes and its hash cache out of the tree they lie in" do
    tree = sample_tree
    out = File.join(tree, "release.torrent")
    cache = File.join(tree, "hashes.json")
    unaligned = File.join(tree, "plain.torrent")
    2.times do
      murder("make-torrent", tree, "--tracker", "127.0.0.1:8998", "-o", unaligned)
      murder("make-torrent", tree, "--align", "--hash-cache", cache, "--tracker", "127.0.0.1:8998", "-o", out)
    end
    [out, unaligned].each do |torrent|
      names = JSON.parse(murder("info", "--json", torrent))["files"].map { |f| f["path"].join("/") }
      expect(names).not_to include(File.basename(torrent))
    end
    aligned = JSON.parse(murder("info", "--json", out))["files"].map { |f| f["path"].join("/") }
    expect(aligned).not_to include("hashes.json")
    expect(File.stat(cache).mode & 0o077).to eq(0) # it tells the tree's names and hashes
    expect(aligned).to include("plain.torrent") # another file, written by another run: part of the tree
    expect(Murder::Torrent.load(out).verify(tree)).to all(be(true))
  end

  it "prints files as lists of components in its JSON" do
    murder("make-torrent", sample_tree, "--tracker", "127.0.0.1:8998", "-o", "r.torrent")
    info = JSON.parse(murder("info", "--json", "r.torrent"))
    expect(info.keys).to include("info_hash", "name", "total_length", "data_length", "piece_length", "piece_count", "private", "files")
    expect(info["files"].first).to eq("path" => ["README"], "length" => 7)
    expect(info["files"]).to include("path" => ["app", "empty"], "length" => 0)
  end

  it "gives an aligned tree's size as its data, with the pad files' share beside it" do
    made = murder("make-torrent", sample_tree, "--align", "--tracker", "127.0.0.1:8998", "-o", "r.torrent")
    info = JSON.parse(murder("info", "--json", "r.torrent"))
    data = info["files"].sum { |f| f["length"] }
    expect(info["data_length"]).to eq(data)
    expect(info["total_length"]).to be > data
    size = "#{Murder::Progress.human(data)} in #{info['files'].size} files, " \
           "#{Murder::Progress.human(info['total_length'] - data)} more in pad files"
    expect(made).to include("size       #{size}")
    expect(murder("info", "r.torrent")).to include("size       #{Murder::Progress.human(data)} (#{data} bytes), ")
  end

  it "keeps a tree's empty directories in its torrent and shows them" do
    tree = File.join(tmpdir, "tree")
    FileUtils.mkdir_p([File.join(tree, "tmp/cache"), File.join(tree, "log")])
    File.write(File.join(tree, "README"), "hello\n")
    File.write(File.join(tree, "log/.keep"), "")
    out, err, status = Open3.capture3(MURDER_BIN, "make-torrent", tree, "--align", "--tracker", "127.0.0.1:8998",
                                      "-o", File.join(tmpdir, "t.torrent"))
    expect(status).to be_success, err
    expect(err).to eq("")
    expect(out).to include("  empty dirs 1\n")
    expect(murder("info", "t.torrent")).to include("empty dirs 1\n  tmp/cache/\n")
    expect(JSON.parse(murder("info", "--json", "t.torrent"))["empty_dirs"]).to eq([%w[tmp cache]])
  end

  it "ends quietly when what reads its output has gone (murder info X | head)" do
    murder("make-torrent", sample_tree, "--tracker", "127.0.0.1:8998", "-o", "r.torrent")
    reader, writer = IO.pipe
    reader.close # the reader is gone before murder writes a byte
    err_path = File.join(tmpdir, "info.err")
    pid = Process.spawn(MURDER_BIN, "info", "r.torrent", out: writer, err: err_path, chdir: tmpdir)
    writer.close
    _, status = Process.wait2(pid)
    expect(File.read(err_path)).to eq("")
    # As a Unix filter does: SIGPIPE, or exit 0; never a panic (exit 101).
    expect(status.success? || status.termsig == Signal.list.fetch("PIPE")).to be(true), status.inspect
  end

  it "fails with one line and a non-zero exit on bad input, leaving no output file" do
    cases = {
      ["make-torrent", "missing", "--tracker", "h:1", "-o", "x.torrent"] => /missing: No such file/,
      ["make-torrent", sample_file, "--tracker", "nohost", "-o", "x.torrent"] => /expected HOST:PORT/,
      ["make-torrent", sample_file, "--tracker", "h:1", "-o", "x.torrent", "--piece-length", "3K"] => /power of two/,
      ["make-torrent", sample_file, "--tracker", "h:1", "-o", "no/such/dir/x.torrent"] => /No such file/,
      ["info", "missing.torrent"] => /missing\.torrent: No such file/,
      ["peer", "x.torrent", "dest", "--ticket-base", "base.torrent"] => /--ticket-base .*needs `-`/
    }
    cases.each do |args, message|
      status, _out, err = run_failing(MURDER_BIN, *args)
      expect(status.exitstatus).to eq(1), args.inspect
      expect(err.lines.size).to eq(1), err
      expect(err).to match(/\Amurder: /).and match(message)
    end
    expect(Dir.children(tmpdir).grep(/torrent|dest/)).to be_empty

    File.binwrite(File.join(tmpdir, "evil.torrent"),
                  "d4:infod6:lengthi1e4:name5:../..12:piece lengthi16384e6:pieces20:#{'x' * 20}ee")
    status, _out, err = run_failing(MURDER_BIN, "info", "evil.torrent")
    expect(status.exitstatus).to eq(1)
    expect(err).to eq(%(murder: evil.torrent: invalid torrent: unsafe file path "../..": component holds a slash (absolute or nested path)\n))
  end

  it "refuses a wait longer than a day for stop and serve-file (a huge one overflowed the deadline)" do
    [%w[stop --pidfile p.pid --timeout 18446744073709551615],
     %w[serve-file f --clients 1 --timeout 86401]].each do |args|
      status, _out, err = run_failing(MURDER_BIN, *args)
      expect(status.exitstatus).to eq(2), args.inspect
      expect(err).to match(/--timeout.*86400/m)
    end
  end

  # `murder relay`, as a deploy runs it over SSH: it says when it is
  # ready, passes bytes both ways, and ends with its standard input.
  it "relays connections until its standard input closes, saying when it is ready" do
    echo = TCPServer.new("127.0.0.1", 0)
    server = Thread.new do
      client = echo.accept
      client.write(client.readpartial(1 << 16).upcase)
      client.close
    end
    Open3.popen3(MURDER_BIN, "relay", "--forward", "0=127.0.0.1:#{echo.addr[1]}", "--while-stdin-open") do |stdin, out, _err, waiter|
      ready = out.gets
      expect(ready).to match(/\Amurder relay: ready: \[::\]:(\d+) -> 127\.0\.0\.1:#{echo.addr[1]}\n\z/)
      port = Integer(ready[/\]:(\d+)/, 1])
      TCPSocket.open("127.0.0.1", port) do |s|
        s.write("through the relay")
        expect(s.read).to eq("THROUGH THE RELAY")
      end
      stdin.close
      expect(waiter.join(5)).not_to be_nil, "the relay still runs after its input closed"
      expect(waiter.value).to be_success
    end
    server.join
    status, _out, err = run_failing(MURDER_BIN, "relay", "--forward", "8998=somewhere:1")
    expect(status.exitstatus).to eq(2)
    expect(err).to include(%(forward "8998=somewhere:1": expected PORT=ADDRESS:PORT))
  ensure
    echo&.close
  end

  # A foreground seed or tracker took --log and wrote nothing there: its
  # log went to stderr, and the file never came.
  it "refuses --log without --daemon for a seed and a tracker, where it named a file never written" do
    File.write(File.join(tmpdir, "data"), "x" * 1000)
    murder("make-torrent", "data", "-t", "127.0.0.1:8998", "-o", "data.torrent", "-q")
    # (It seeded on in the foreground: `timeout` ends it, status 124.)
    status, _out, err = run_failing("timeout", "10", MURDER_BIN, "seed", "data.torrent", "data", "--log", "seed.log")
    expect(status.exitstatus).to eq(1)
    expect(err).to eq("murder: --log names a background seed's log: use it with --daemon " \
                      "(in the foreground, logs go to stderr)\n")
    status, _out, err = run_failing("timeout", "10", MURDER_BIN, "tracker", "--port", "0", "--log", "tracker.log")
    expect(status.exitstatus).to eq(2)
    expect(err).to include("--daemon")
    expect(%w[seed.log tracker.log].map { |f| File.exist?(File.join(tmpdir, f)) }).to eq([false, false])
  end

  # Just enough bencode to write hostile torrents by hand.
  def bencode(value)
    case value
    when Integer then "i#{value}e"
    when String then "#{value.bytesize}:#{value}"
    when Array then "l#{value.map { |v| bencode(v) }.join}e"
    when Hash then "d#{value.sort.map { |k, v| bencode(k) + bencode(v) }.join}e"
    end
  end

  def hostile(name, files, total)
    pieces = "\x01".b * 20 * ((total + 16_383) / 16_384)
    info = { "name" => "release", "piece length" => 16_384, "pieces" => pieces, "files" => files }
    path = File.join(tmpdir, "#{name}.torrent")
    File.binwrite(path, bencode("announce" => "http://127.0.0.1:9/announce", "info" => info))
    path
  end

  it "refuses hostile tree torrents with one clear line, writing nothing" do
    file = { "length" => 10, "path" => ["a"] }
    cases = {
      "link-out" => [[file, { "attr" => "l", "length" => 0, "path" => ["x"], "symlink path" => ["..", "etc"] }], 10,
                     /is a link that is absolute or leaves the tree/],
      "link-absolute" => [[file, { "attr" => "l", "length" => 0, "path" => ["x"], "symlink path" => ["/etc"] }], 10,
                          /is a link that is absolute or leaves the tree/],
      "under-link" => [[file, { "attr" => "l", "length" => 0, "path" => ["lib"], "symlink path" => ["a"] },
                        { "length" => 5, "path" => %w[lib evil] }], 15, /lies under a path that is a link/],
      "file-for-dir" => [[file, { "length" => 5, "path" => %w[a b] }], 15, /lies under a path that is also a file/],
      "pad-with-data" => [[file, { "attr" => "p", "length" => 32_758, "path" => [".pad", "32758"] },
                           { "length" => 1, "path" => ["b"] }], 32_769, /is a pad file that holds data/]
    }
    cases.each do |name, (files, total, message)|
      torrent = hostile(name, files, total)
      dest = File.join(tmpdir, "out-#{name}/release")
      status, _out, err = run_failing(MURDER_BIN, "peer", torrent, dest, "--linger", "0")
      expect(status.exitstatus).to eq(1), name
      expect(err.lines.size).to eq(1), err
      expect(err).to start_with("murder: #{torrent}: invalid torrent: ").and match(message)
      expect(Dir.exist?(File.dirname(dest))).to be(false), "#{name} wrote something"
    end
  end
end
