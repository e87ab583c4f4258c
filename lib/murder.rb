# frozen_string_literal: true

require_relative "murder/version"
require_relative "murder/error"
require_relative "murder/binary"

begin
  # The native engine: installed by the gem into the extension dir, or put in
  # lib/murder by `rake compile` during development.
  require "murder/murder"
rescue LoadError => e
  raise LoadError, "murder's native extension is not built (#{e.message}); run `rake compile`"
end

require_relative "murder/torrent"
require_relative "murder/tracker"
require_relative "murder/session"
require_relative "murder/secret"

# BitTorrent deploys for fleets of servers.
#
# `require "murder"` loads the native engine (a Rust extension) and its Ruby
# front: {Murder::Torrent} makes, reads and verifies .torrent files,
# {Murder::Tracker} tracks swarms, {Murder::Seeder} and {Murder::Download}
# take part in them. {Murder::RakeTask} (`require "murder/rake_task"`) and
# the Capistrano plugins (`require "capistrano/murder"`) deploy with them.
# `require "murder"` raises `LoadError` when the extension is not built
# (`rake compile` in a checkout).
#
# ## Errors
#
# Every error the engine reports is a {Murder::Error Murder::Error}, most of
# them one of {Murder::InvalidTorrent InvalidTorrent}, {Murder::FileError
# FileError}, {Murder::InvalidArgument InvalidArgument} and
# {Murder::Cancelled Cancelled} (see
# lib/murder/error.rb for which engine error becomes which). Arguments of the
# wrong Ruby type raise `TypeError` or `ArgumentError`, integers out of the
# range of a port or a count `RangeError`, as usual in Ruby. A panic in a
# native thread (a bug) raises `RuntimeError`.
#
# ## Threads and the GVL
#
# Long native work runs with Ruby's GVL released, so other Ruby threads run
# meanwhile: hashing ({Torrent.create}), checking data ({Torrent#verify},
# {Seeder#start}, the start of {Download#run}), waiting for a download
# ({Download#run}) and stopping ({Session#stop}, {Tracker#stop}). The calling
# thread takes the GVL back about every 100 ms to handle interrupts and, for
# {Torrent.create} and {Torrent#verify}, to call the progress block. An
# interrupt (Ctrl-C, `Thread#raise`, `Thread#kill`) cancels the native work
# and takes effect in that thread once the work has stopped; an exception
# raised by the progress block cancels it too. A tracker and a session
# serve from native threads of their own, which never hold the GVL.
# Everything else (starting a tracker, reading and writing .torrent files,
# stats) is quick and holds the GVL.
#
# @example Make a torrent, track and seed it, download it
#   require "murder"
#
#   torrent = Murder::Torrent.create("release/", tracker: "10.0.0.1:8998", align: true)
#   tracker = Murder::Tracker.new(port: 8998).start
#   tracker.allow(torrent)
#   seeder = Murder::Seeder.new(torrent, "release/", ip: "10.0.0.1", lazy_check: true).start
#   # on a host:
#   Murder::Download.new(torrent, "/srv/app/releases/release").run # => {"event" => "complete", ...}
#   seeder.stop
#   tracker.stop
module Murder
  # The bind address meaning every address of the host: IPv6 and IPv4 on one
  # socket (IPv4 alone on a host without IPv6). "0.0.0.0" is IPv4 alone.
  EVERY_ADDRESS = "::"
end
