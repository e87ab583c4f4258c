# frozen_string_literal: true

# Capfile:
#
#   require "capistrano/murder"
#
# defines Twitter's Murder tasks (murder:start_tracker, murder:create_torrent,
# murder:start_seeding, murder:peer, ...) and murder:distribute, which runs
# them all. Hosts run only the `murder` binary (uploaded by
# murder:distribute_files); they need no Ruby or Python.

require "capistrano/plugin"
require_relative "murder/support"
require_relative "murder/helpers"
require_relative "murder/binary_distribution"

module Capistrano
  module Murder
    # The murder: tasks and their settings.
    class Tasks < ::Capistrano::Plugin
      include Helpers
      S = Support # short for the task file

      def set_defaults
        # Murder's names and meanings.
        set_if_empty :default_tag, ""
        set_if_empty :default_seeder_files_path, ""
        set_if_empty :default_destination_path, ""
        set_if_empty :default_temp_path, "/tmp"
        set_if_empty :remote_murder_path, -> { "#{fetch(:deploy_to)}/shared/murder" }
        set_if_empty :tracker_port, 8998
        # Short, so the deployer's progress line (from /stats.json) moves.
        set_if_empty :murder_tracker_interval, 5
        # murder's own.
        set_if_empty :murder_binary, -> { Support.default_binary }
        set_if_empty :murder_linger, 30
        # Hosts that have the binary pass it on: this port, this many each.
        set_if_empty :murder_binary_port, -> { fetch(:tracker_port) + 1 }
        set_if_empty :murder_binary_fanout, 3
        set_if_empty :murder_piece_length, nil
        set_if_empty :murder_seed_locally, false
      end

      def define_tasks
        eval_rakefile File.expand_path("../../recipes/murder.rake", __dir__)
      end

      def register_hooks; end
    end
  end
end

install_plugin Capistrano::Murder::Tasks
