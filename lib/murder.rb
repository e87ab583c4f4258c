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

# BitTorrent deploys for fleets of servers.
module Murder
end
