# frozen_string_literal: true

require_relative "error"

# BitTorrent deploys for fleets of servers.
module Murder
  # The `murder` command that every host runs: $MURDER_BINARY if set, the
  # one the installed gem built (beside its extension), or, in a checkout,
  # target/release/murder. Raises Murder::Error when there is none.
  #
  # @return [String] the path of an executable `murder`
  # @raise [Murder::Error] when no binary is found
  def self.binary
    candidates = [ENV.fetch("MURDER_BINARY", nil)]
    candidates += $LOAD_PATH.map { |dir| File.join(dir, "murder", "bin", "murder") }
    candidates << File.expand_path("../../target/release/murder", __dir__)
    found = candidates.compact.find { |path| File.file?(path) && File.executable?(path) }
    found or raise Error, "no murder binary: reinstall the gem (it builds one), build it in a checkout " \
                          "(rake cli), or set MURDER_BINARY"
  end
end
