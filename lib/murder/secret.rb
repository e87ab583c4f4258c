# frozen_string_literal: true

require "securerandom"

module Murder
  # A fresh secret for one deploy's closed swarm: 32 random bytes as 64 hex
  # digits. Hand it to hosts over a channel they trust (the deploy strategy
  # sends it in the deploy ticket on `murder peer`'s standard input), never
  # on a command line or in a file others can read.
  #
  # @example
  #   secret = Murder.generate_secret
  #   tracker.allow(torrent, secret: secret)
  #   Murder::Seeder.new(torrent, "build", secret: secret).start
  #
  # @return [String] 64 lowercase hex digits
  def self.generate_secret
    SecureRandom.hex(32)
  end
end
