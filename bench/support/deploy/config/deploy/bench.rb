# frozen_string_literal: true

Integer(ENV.fetch("FARM_SIZE")).times { |i| server "10.250.0.#{11 + i}", roles: %w[app] }
