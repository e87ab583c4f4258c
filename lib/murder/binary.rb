# frozen_string_literal: true

require_relative "error"

module Murder
  # The `murder` command that every host runs: the first of these that is
  # an executable file: `$MURDER_BINARY`; `murder/bin/murder` below a
  # directory of `$LOAD_PATH`, in its order (where the installed gem puts
  # the binary it built, beside its extension); in a checkout,
  # `target/release/murder` (`rake cli`). Needs no native extension:
  # `require "murder/binary"` is enough.
  #
  # @example
  #   Murder.binary # => ".../murder/bin/murder"
  #
  # @return [String] the path of an executable `murder`
  # @raise [Murder::Error] when none of these is an executable file
  def self.binary
    candidates = [ENV.fetch("MURDER_BINARY", nil)]
    candidates += $LOAD_PATH.map { |dir| File.join(dir, "murder", "bin", "murder") }
    candidates << File.expand_path("../../target/release/murder", __dir__)
    found = candidates.compact.find { |path| File.file?(path) && File.executable?(path) }
    found or raise Error, "no murder binary: reinstall the gem (it builds one), build it in a checkout " \
                          "(rake cli), or set MURDER_BINARY"
  end
end
