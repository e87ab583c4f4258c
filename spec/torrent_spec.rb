# frozen_string_literal: true

RSpec.describe Murder::Torrent do
  describe ".create" do
    it "makes a torrent of a directory tree that verifies against it" do
      root = sample_tree
      torrent = described_class.create(root, tracker: "10.0.0.1:8998", piece_length: 32 * 1024)
      expect(torrent.name).to eq("release")
      expect(torrent.announce).to eq("http://10.0.0.1:8998/announce")
      expect(torrent.piece_length).to eq(32 * 1024)
      expect(torrent.files.size).to eq(42)
      expect(torrent.files.first.to_a).to eq(["README", 7])
      expect(torrent.total_length).to eq(torrent.files.sum(&:length))
      expect(torrent.piece_count).to eq((torrent.total_length + 32 * 1024 - 1) / (32 * 1024))
      expect(torrent).not_to be_private
      expect(torrent).not_to be_single_file
      expect(torrent.info_hash).to match(/\A\h{40}\z/)
      expect(torrent.verify(root)).to all(be(true))
    end

    it "counts an aligned tree's data apart from its pad files" do
      root = sample_tree
      plain = described_class.create(root, tracker: "10.0.0.1:8998", piece_length: 32 * 1024)
      aligned = described_class.create(root, tracker: "10.0.0.1:8998", piece_length: 32 * 1024, align: true)
      expect(aligned.data_length).to eq(plain.total_length)
      expect(aligned.total_length).to be > aligned.data_length
      expect(plain.data_length).to eq(plain.total_length)
    end

    it "keeps an aligned tree's empty directories in the torrent, saying nothing" do
      root = File.join(tmpdir, "tree")
      FileUtils.mkdir_p([File.join(root, "public/uploads"), File.join(root, "log")])
      File.write(File.join(root, "README"), "hello\n")
      File.write(File.join(root, "log/.keep"), "")
      torrent = nil
      expect { torrent = described_class.create(root, tracker: "10.0.0.1:8998", align: true) }.not_to output.to_stderr
      expect(torrent.empty_dirs).to eq(["public/uploads"])
      expect(described_class.parse(torrent.to_bencode).empty_dirs).to eq(["public/uploads"])
      expect(described_class.create(root, tracker: "10.0.0.1:8998").empty_dirs).to eq([]) # unaligned: none
    end

    it "leaves out of an aligned tree what exclude names, at any depth, and refuses exclude without align" do
      root = File.join(tmpdir, "tree")
      FileUtils.mkdir_p([File.join(root, ".git/objects"), File.join(root, "vendor/lib/.git")])
      File.write(File.join(root, ".git/HEAD"), "ref: refs/heads/main\n")
      File.write(File.join(root, "vendor/lib/.git/HEAD"), "ref: refs/heads/main\n")
      File.write(File.join(root, ".gitignore"), "tmp/\n")
      File.write(File.join(root, "vendor/lib/lib.rb"), "module Lib; end\n")
      File.write(File.join(root, "debug.log"), "noise\n")
      torrent = described_class.create(root, tracker: "10.0.0.1:8998", align: true, exclude: [".git", "*.log"])
      expect(torrent.files.map(&:path)).to eq([".gitignore", "vendor/lib/lib.rb"])
      expect { described_class.create(root, tracker: "10.0.0.1:8998", exclude: [".git"]) }
        .to raise_error(Murder::InvalidArgument, /exclude needs an aligned tree/)
      expect { described_class.create(root, tracker: "10.0.0.1:8998", align: true, exclude: ["[x"]) }
        .to raise_error(Murder::InvalidArgument, /exclude "\[x"/)
    end

    it "makes a private single-file torrent with an automatic piece length" do
      torrent = described_class.create(sample_file, tracker: "seed.example:8998", private: true)
      expect(torrent).to be_private
      expect(torrent).to be_single_file
      expect(torrent.piece_length).to eq(32 * 1024) # the smallest automatic length: 1.5 MB is far below 2000 pieces
      expect(torrent.files.map(&:to_a)).to eq([["app.tgz", 1_500_000]])
    end

    it "reports progress from the block with bytes hashed and bytes in all" do
      path = File.join(tmpdir, "sparse")
      File.open(path, "w") { |f| f.truncate(1 << 30) }
      calls = []
      described_class.create(path, tracker: "h:1", piece_length: 16 * 1024) { |done, total| calls << [done, total] }
      expect(calls).not_to be_empty
      # Total 0 until hashing starts (as documented; a busy machine's first
      # report can come that early), then the file's size, never back.
      expect(calls.map(&:last).drop_while(&:zero?).uniq).to eq([1 << 30])
      expect(calls.select { |_, total| total.zero? }.map(&:first).uniq - [0]).to be_empty
      expect(calls.map(&:first)).to eq(calls.map(&:first).sort)
      expect(calls.last).to eq([1 << 30, 1 << 30])
    end

    it "lets other Ruby threads run while it hashes (the GVL is released)" do
      path = File.join(tmpdir, "sparse")
      File.open(path, "w") { |f| f.truncate(3 << 30) }
      ticks = 0
      running = true
      counter = Thread.new do
        while running
          ticks += 1
          sleep 0.001
        end
      end
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      described_class.create(path, tracker: "h:1", piece_length: 16 * 1024)
      elapsed_ms = (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started) * 1000
      running = false
      counter.join
      # Holding the GVL would allow the counter about one step per 100 ms tick.
      expect(ticks).to be > elapsed_ms / 10, "#{ticks} ticks in #{elapsed_ms.round} ms"
    end

    it "stops hashing when the thread is interrupted" do
      path = File.join(tmpdir, "sparse")
      File.open(path, "w") { |f| f.truncate(64 << 30) }
      worker = Thread.new { described_class.create(path, tracker: "h:1", piece_length: 16 * 1024) }
      worker.report_on_exception = false
      sleep 0.3
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      worker.raise(Interrupt)
      expect { worker.join }.to raise_error(Interrupt)
      expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 2
    end

    it "raises Murder errors for bad input" do
      expect { described_class.create(File.join(tmpdir, "nope"), tracker: "h:1") }
        .to raise_error(Murder::FileError, /nope: No such file/)
      expect { described_class.create(sample_file, tracker: "no-port") }
        .to raise_error(Murder::InvalidArgument, /expected HOST:PORT/)
      expect { described_class.create(sample_file, tracker: "h:1", piece_length: 1000) }
        .to raise_error(Murder::InvalidArgument, /power of two/)
      FileUtils.mkdir_p(File.join(tmpdir, "empty"))
      expect { described_class.create(File.join(tmpdir, "empty"), tracker: "h:1") }
        .to raise_error(Murder::InvalidArgument, /nothing to share/)
      expect(Murder::InvalidTorrent.ancestors).to include(Murder::Error)
    end
  end

  describe ".load, .parse, #to_bencode and #write" do
    it "round-trips without changing the info-hash" do
      torrent = described_class.create(sample_tree, tracker: "h:8998")
      out = File.join(tmpdir, "r.torrent")
      expect(torrent.write(out)).to equal(torrent)
      loaded = described_class.load(out)
      expect(loaded.info_hash).to eq(torrent.info_hash)
      expect(loaded.to_bencode).to eq(File.binread(out))
      expect(loaded.to_bencode.encoding).to eq(Encoding::BINARY)
      expect(described_class.parse(File.binread(out)).files.map(&:to_a)).to eq(torrent.files.map(&:to_a))
    end

    it "refuses hostile torrents with a clear error" do
      {
        "d4:infod6:lengthi10e4:name2:..12:piece lengthi16384e6:pieces20:#{'x' * 20}ee" => /unsafe file path "\.\."/,
        "d4:infod6:lengthi-5e4:name1:a12:piece lengthi16384e6:pieces20:#{'x' * 20}ee" => /`length` is negative/,
        "d4:infod6:lengthi10e4:name1:a12:piece lengthi16384e6:pieces40:#{'x' * 40}ee" => /`pieces` is 40 bytes/,
        "d4:infod6:lengthi10e4:name1:a" => /not valid bencode/,
        "d4:infod6:lengthi10e4:name1:a12:piece lengthi16384e6:pieces20:#{'x' * 20}eeXX" => /trailing data/,
        "#{'l' * 10_000}#{'e' * 10_000}" => /not valid bencode/
      }.each do |bytes, message|
        expect { described_class.parse(bytes) }.to raise_error(Murder::InvalidTorrent, message)
      end
      expect { described_class.load(File.join(tmpdir, "missing.torrent")) }.to raise_error(Murder::FileError)
    end
  end

  describe "#verify" do
    it "finds damaged and missing pieces" do
      root = sample_tree
      torrent = described_class.create(root, tracker: "h:1", piece_length: 16 * 1024)
      victim = File.join(root, "app/dir0/file0.rb")
      File.binwrite(victim, "x" * File.size(victim))
      pieces = torrent.verify(root)
      expect(pieces.count(false)).to be_between(1, 6)
      FileUtils.rm_rf(root)
      expect(torrent.verify(root)).to all(be(false))
      expect(torrent.complete?(root)).to be(false)
    end
  end
end
