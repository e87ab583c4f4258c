#!/usr/bin/env ruby
# frozen_string_literal: true

# Writes a sample application release: FILES files of varied sizes (many
# small, a few large, as in a real release) adding up to BYTES, in nested
# directories, with deterministic content. Reuses an earlier tree made with
# the same arguments.
#
#   ruby bench/support/sample_release.rb DIR FILES BYTES   # BYTES: 200M, 1G, ...

require "fileutils"

module SampleRelease
  module_function

  def parse_size(text)
    match = text.to_s.match(/\A(\d+)([KMG]?)\z/i) or abort "bad size #{text.inspect}"
    n, unit = match.captures
    Integer(n) << { "" => 0, "K" => 10, "M" => 20, "G" => 30 }.fetch(unit.upcase)
  end

  def write(dir, files:, bytes:, seed: 2010)
    stamp = "#{dir}.stamp"
    wanted = "#{files} #{bytes} #{seed}"
    return dir if File.directory?(dir) && File.exist?(stamp) && File.read(stamp) == wanted

    FileUtils.rm_rf(dir)
    rng = Random.new(seed)
    # Log-uniform weights: most files are small, a few carry much of the size.
    weights = Array.new(files) { Math.exp(rng.rand * 9) }
    scale = bytes / weights.sum
    sizes = weights.map { |w| (w * scale).floor }
    sizes[-1] += bytes - sizes.sum
    sizes.each_with_index do |size, i|
      path = File.join(dir, "app", "mod#{i % 37}", "part#{i % 11}", "file#{i}.rb")
      FileUtils.mkdir_p(File.dirname(path))
      File.binwrite(path, rng.bytes(size))
    end
    File.write(stamp, wanted)
    dir
  end
end

if $PROGRAM_NAME == __FILE__
  dir, files, bytes = ARGV
  abort "usage: #{$PROGRAM_NAME} DIR FILES BYTES" unless dir && files && bytes
  SampleRelease.write(dir, files: Integer(files), bytes: SampleRelease.parse_size(bytes))
end
