# frozen_string_literal: true

# Torrents travel between murder and the tools ops people already have:
# Debian's mktorrent, transmission-cli and python3-libtorrent.
RSpec.describe "torrent interop" do
  def murder_info(torrent)
    JSON.parse(murder("info", "--json", torrent))
  end

  def expect_same_as_libtorrent(torrent)
    ours = murder_info(torrent)
    theirs = JSON.parse(libtorrent("info", torrent))
    expect(ours["info_hash"]).to eq(theirs["info_hash"])
    expect(ours["total_length"]).to eq(theirs["total_size"])
    expect(ours["piece_count"]).to eq(theirs["num_pieces"])
    expect(ours["piece_length"]).to eq(theirs["piece_length"])
    expect(ours["name"]).to eq(theirs["name"])
    expect(ours["files"]).to eq(theirs["files"])
    ours
  end

  context "a torrent made by murder make-torrent" do
    it "is read by transmission-show and libtorrent with the same info-hash" do
      root = sample_tree
      out = File.join(tmpdir, "ours.torrent")
      murder("make-torrent", root, "--tracker", "127.0.0.1:8998", "-o", out, "--piece-length", "64K")
      ours = expect_same_as_libtorrent(out)
      shown = run!("transmission-show", out)
      expect(shown).to include("Hash: #{ours['info_hash']}")
      expect(shown).to include("Piece Count: #{ours['piece_count']}")
      expect(shown).to include("http://127.0.0.1:8998/announce")
    end

    it "is accepted as private by transmission-show" do
      out = File.join(tmpdir, "private.torrent")
      murder("make-torrent", sample_file, "--tracker", "127.0.0.1:8998", "-o", out, "--private")
      expect(run!("transmission-show", out)).to match(/Privacy: Private torrent/)
      expect(murder_info(out)["private"]).to be(true)
      expect_same_as_libtorrent(out)
    end
  end

  context "torrents made by other tools are read by murder info" do
    it "mktorrent (directory and single file)" do
      root = sample_tree
      run!("mktorrent", "-l", "15", "-a", "http://127.0.0.1:8998/announce", "-o", "mk.torrent", root)
      expect_same_as_libtorrent(File.join(tmpdir, "mk.torrent"))
      run!("mktorrent", "-a", "http://127.0.0.1:8998/announce", "-o", "mk1.torrent", sample_file)
      expect(expect_same_as_libtorrent(File.join(tmpdir, "mk1.torrent"))["single_file"]).to be(true)
    end

    it "transmission-create" do
      root = sample_tree
      run!("transmission-create", "-o", "tr.torrent", "-t", "http://127.0.0.1:8998/announce", root)
      expect_same_as_libtorrent(File.join(tmpdir, "tr.torrent"))
    end

    it "libtorrent, v1 only" do
      root = sample_tree
      libtorrent("create", root, "lt1.torrent", "v1")
      expect_same_as_libtorrent(File.join(tmpdir, "lt1.torrent"))
    end

    it "libtorrent, v1+v2 hybrid with BEP 47 pad files" do
      root = sample_tree
      libtorrent("create", root, "hybrid.torrent", "hybrid")
      ours = expect_same_as_libtorrent(File.join(tmpdir, "hybrid.torrent"))
      real = ours["files"].sum { |f| f["length"] }
      expect(ours["total_length"]).to be > real # the pads count in the pieces
    end
  end

  it "murder's torrent verifies data that libtorrent's piece hashes agree on" do
    root = sample_tree
    libtorrent("create", root, "lt1.torrent", "v1")
    torrent = Murder::Torrent.load(File.join(tmpdir, "lt1.torrent"))
    expect(torrent.verify(root)).to all(be(true))
  end
end
