# frozen_string_literal: true

require "fileutils"

# A realistic release and the next one, for bench/release: the source text
# of interpreters' standard libraries found on this machine (Python and
# Ruby, and the packages Debian installed for them), 32 MiB of
# incompressible assets, executables and symbolic links — about 3,700 files
# and 78 MB. The next release edits 38 files, adds 5, removes 5 and rebuilds
# one 4 MiB asset, in place (as a build directory or a checkout changes):
# about 6 % of the bytes.
module ReleasePair
  SOURCES = [
    "/usr/lib/python3.11",
    "/usr/lib/python3/dist-packages",
    "/usr/lib/ruby/3.1.0",
    "/usr/lib/ruby/vendor_ruby",
    "/root/.pyenv/versions/3.11.7/lib/python3.11"
  ].freeze
  TEXT_FILES = 3_680
  TEXT_BYTES = 46_000_000
  ASSETS = 8
  ASSET_BYTES = 4 << 20

  module_function

  # Text files to copy: [source path, path in the release], in a stable order.
  def text_files
    picked = []
    bytes = 0
    SOURCES.each do |root|
      next unless File.directory?(root)

      Dir.glob("**/*.{py,rb}", base: root).sort.each do |rel|
        next if rel.include?("__pycache__") || rel.start_with?("site-packages/")

        path = File.join(root, rel)
        next unless File.file?(path) && !File.symlink?(path)

        picked << [path, File.join("lib", File.basename(root), rel)]
        bytes += File.size(path)
        return picked if picked.size >= TEXT_FILES || bytes >= TEXT_BYTES
      end
    end
    picked
  end

  # Writes release A at `dir` (replacing what is there).
  def write_a(dir)
    FileUtils.rm_rf(dir)
    text_files.each do |from, rel|
      to = File.join(dir, rel)
      FileUtils.mkdir_p(File.dirname(to))
      FileUtils.cp(from, to)
    end
    ASSETS.times { |i| write_asset(dir, i, seed: 100 + i) }
    FileUtils.mkdir_p(File.join(dir, "bin"))
    %w[server worker console migrate cron].each do |name|
      path = File.join(dir, "bin", name)
      File.write(path, "#!/bin/sh\n# #{name} of the sample application\nexec ruby -e 'puts :#{name}' \"$@\"\n")
      File.chmod(0o755, path)
    end
    File.symlink("../assets/asset-0.bin", File.join(dir, "bin/logo.bin"))
    File.symlink("assets", File.join(dir, "public"))
    dir
  end

  def write_asset(dir, index, seed:)
    path = File.join(dir, "assets", "asset-#{index}.bin")
    FileUtils.mkdir_p(File.dirname(path))
    File.binwrite(path, Random.new(seed).bytes(ASSET_BYTES))
  end

  # Turns release A at `dir` into release B, in place. Returns the bytes
  # of files that B changed or added.
  def make_b(dir)
    texts = Dir.glob("lib/**/*.{py,rb}", base: dir).sort
    changed = 0
    texts.each_slice(texts.size / 38).first(38).map(&:first).each_with_index do |rel, i|
      path = File.join(dir, rel)
      File.open(path, "a") { |f| f.write("\n# release two: change #{i}\n") }
      changed += File.size(path)
    end
    5.times do |i|
      path = File.join(dir, "lib/added/added_#{i}.rb")
      FileUtils.mkdir_p(File.dirname(path))
      File.write(path, "# added in release two\n" + File.read(File.join(dir, texts[i * 7])))
      changed += File.size(path)
    end
    texts.last(5).each { |rel| File.delete(File.join(dir, rel)) }
    write_asset(dir, 3, seed: 9_999)
    changed + ASSET_BYTES
  end

  def size(dir)
    Dir.glob("**/*", File::FNM_DOTMATCH, base: dir).sum do |rel|
      path = File.join(dir, rel)
      File.file?(path) && !File.symlink?(path) ? File.size(path) : 0
    end
  end

  def count(dir)
    Dir.glob("**/*", File::FNM_DOTMATCH, base: dir).count { |rel| File.file?(File.join(dir, rel)) || File.symlink?(File.join(dir, rel)) }
  end
end
