# frozen_string_literal: true

module Murder
  VERSION = "0.1.0"
end
