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

# Capistrano's namespace; murder adds {Capistrano::Murder} to it.
module Capistrano
  # Murder's Capistrano plugins: {Tasks} (Twitter's Murder tasks, installed
  # by `require "capistrano/murder"`) and {SCM} (a deploy strategy, `require
  # "capistrano/murder/scm"` and `install_plugin Capistrano::Murder::SCM`).
  # Their problems are raised as {Capistrano::Murder::Error}.
  module Murder
    # The murder: tasks (recipes/murder.rake) and their settings, installed
    # by `require "capistrano/murder"`.
    #
    # Settings, with their defaults: `:default_tag` (""),
    # `:default_seeder_files_path` (""), `:default_destination_path` (""),
    # `:default_temp_path` ("/tmp") and `:remote_murder_path`
    # (DEPLOY_TO/shared/murder), as in Murder; `:tracker_port` (8998);
    # `:murder_tracker_interval` (5 s, so the progress line moves);
    # `:murder_max_peers_per_address` (256: raise it when more servers reach
    # the tracker through one NAT address);
    # `:murder_binary` (the gem's, {::Murder.binary}); `:murder_linger`
    # (30 s); `:murder_binary_port` (`:tracker_port` + 1) and
    # `:murder_binary_fanout` (3), for hosts that pass the binary on;
    # `:murder_piece_length` (nil: automatic); `:murder_seed_locally`
    # (false; read by the deploy strategy's archive deploy alone). The
    # command line's `tag=`, `files_path=`, `temp_path=`,
    # `destination_path=`, `tree=1` and `path_is_file=1` override some of
    # them (see {Helpers}).
    #
    # @example Capfile
    #   require "capistrano/murder"
    #   # cap production murder:distribute tag=v42 files_path=/srv/build destination_path=/srv/app
    class Tasks < ::Capistrano::Plugin
      include Helpers
      # Short for {Support}, for the task file.
      #
      # @api private
      S = Support # short for the task file

      # Capistrano's hook: sets every setting that is not set yet to its
      # default (see the class comment).
      #
      # @api private
      # @return [void]
      def set_defaults
        Support.keep_ssh_alive
        # Murder's names and meanings.
        set_if_empty :default_tag, ""
        set_if_empty :default_seeder_files_path, ""
        set_if_empty :default_destination_path, ""
        set_if_empty :default_temp_path, "/tmp"
        set_if_empty :remote_murder_path, -> { "#{fetch(:deploy_to)}/shared/murder" }
        set_if_empty :tracker_port, 8998
        # Short, so the deployer's progress line (from /stats.json) moves.
        set_if_empty :murder_tracker_interval, 5
        # Servers one address may add to a swarm (a NAT's hosts share one).
        set_if_empty :murder_max_peers_per_address, 256
        # murder's own.
        set_if_empty :murder_binary, -> { Support.default_binary }
        set_if_empty :murder_linger, 30
        # Hosts that have the binary pass it on: this port, this many each.
        set_if_empty :murder_binary_port, -> { fetch(:tracker_port) + 1 }
        set_if_empty :murder_binary_fanout, 3
        set_if_empty :murder_piece_length, nil
        set_if_empty :murder_seed_locally, false
      end

      # Capistrano's hook: defines the murder: tasks from recipes/murder.rake.
      #
      # @api private
      # @return [void]
      def define_tasks
        eval_rakefile File.expand_path("../../recipes/murder.rake", __dir__)
      end

      # Capistrano's hook: the tasks run only when asked for, but a deploy
      # first checks that Capistrano 2's `set :deploy_via, :murder` is not
      # all there is (`murder:check_strategy`).
      #
      # @api private
      # @return [void]
      def register_hooks
        # A prerequisite, not `before`: the Capfile may require
        # capistrano/deploy after this, and Rake merges the two definitions.
        Rake::Task.define_task("deploy:starting" => "murder:check_strategy")
      end
    end
  end
end

install_plugin Capistrano::Murder::Tasks
