# frozen_string_literal: true

RSpec.describe "the murder command" do
  it "prints the info-hash, size, pieces and speed after making a torrent" do
    out = murder("make-torrent", sample_tree, "--tracker", "127.0.0.1:8998", "-o", "r.torrent")
    hash = JSON.parse(murder("info", "--json", "r.torrent"))["info_hash"]
    expect(out).to include("info-hash  #{hash}")
    expect(out).to match(/pieces +\d+ of 32\.0 KiB/)
    expect(out).to match(%r{hashed in +[\d.]+ s \([\d.]+ \w+/s\)})
  end

  it "prints files as lists of components in its JSON" do
    murder("make-torrent", sample_tree, "--tracker", "127.0.0.1:8998", "-o", "r.torrent")
    info = JSON.parse(murder("info", "--json", "r.torrent"))
    expect(info.keys).to include("info_hash", "name", "total_length", "piece_length", "piece_count", "private", "files")
    expect(info["files"].first).to eq("path" => ["README"], "length" => 7)
    expect(info["files"]).to include("path" => ["app", "empty"], "length" => 0)
  end

  it "fails with one line and a non-zero exit on bad input, leaving no output file" do
    cases = {
      ["make-torrent", "missing", "--tracker", "h:1", "-o", "x.torrent"] => /missing: No such file/,
      ["make-torrent", sample_file, "--tracker", "nohost", "-o", "x.torrent"] => /expected HOST:PORT/,
      ["make-torrent", sample_file, "--tracker", "h:1", "-o", "x.torrent", "--piece-length", "3K"] => /power of two/,
      ["make-torrent", sample_file, "--tracker", "h:1", "-o", "no/such/dir/x.torrent"] => /No such file/,
      ["info", "missing.torrent"] => /missing\.torrent: No such file/
    }
    cases.each do |args, message|
      status, _out, err = run_failing(MURDER_BIN, *args)
      expect(status.exitstatus).to eq(1), args.inspect
      expect(err.lines.size).to eq(1), err
      expect(err).to match(/\Amurder: /).and match(message)
    end
    expect(Dir.children(tmpdir).grep(/torrent/)).to be_empty

    File.binwrite(File.join(tmpdir, "evil.torrent"),
                  "d4:infod6:lengthi1e4:name5:../..12:piece lengthi16384e6:pieces20:#{'x' * 20}ee")
    status, _out, err = run_failing(MURDER_BIN, "info", "evil.torrent")
    expect(status.exitstatus).to eq(1)
    expect(err).to eq(%(murder: invalid torrent: unsafe file path "../..": component holds a slash (absolute or nested path)\n))
  end
end
