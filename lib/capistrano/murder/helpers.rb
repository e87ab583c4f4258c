# frozen_string_literal: true

require_relative "support"

module Capistrano
  module Murder
    # What murder's tasks share (both plugins include it): roles, Murder's
    # arguments, remote paths. Methods of the plugin, so not usable inside
    # `on` blocks (SSHKit's backend): take values into local variables first.
    module Helpers
      S = Support

      # Roles, as in Murder: peers are all servers that take releases; the tracker
      # and the seeder are the first peer unless roles say otherwise.
      def murder_peers
        explicit = roles(:peer)
        explicit.empty? ? release_roles(:all) : explicit
      end

      def murder_tracker
        roles(:tracker).first || murder_peers.first || raise(Capistrano::Murder::Error, "no servers to deploy to")
      end

      def murder_seeder
        roles(:seeder).first || murder_peers.first || raise(Capistrano::Murder::Error, "no servers to deploy to")
      end

      def murder_hosts
        (murder_peers + [murder_tracker, murder_seeder]).uniq
      end

      # Arguments: ENV first (Murder's command line), then the default_ settings.
      def murder_tag
        S.tag(ENV.fetch("tag", fetch(:default_tag)))
      end

      def murder_temp_path
        S.absolute_path(ENV.fetch("temp_path", fetch(:default_temp_path)), "temp_path")
      end

      def murder_files_path
        S.absolute_path(ENV.fetch("files_path", fetch(:default_seeder_files_path)), "files_path")
      end

      def murder_destination_path
        S.absolute_path(ENV.fetch("destination_path", fetch(:default_destination_path)), "destination_path")
      end

      def remote_murder
        "#{fetch(:remote_murder_path)}/murder"
      end

      def murder_run_dir
        "#{fetch(:remote_murder_path)}/run"
      end

      # What the seeder shares: TEMP/TAG.tgz (or TEMP/TAG for path_is_file).
      # Murder's tasks ship a tree (no tar: every file in place, links and
      # modes kept, earlier tags reused) with `tree=1` or :murder_tree.
      def murder_tree?
        tree = S.truthy?("tree") || fetch(:murder_tree, false)
        raise Error, "tree=1 and path_is_file=1 do not go together" if tree && S.truthy?("path_is_file")

        tree
      end

      def murder_payload
        return murder_files_path if murder_tree?

        name = S.truthy?("path_is_file") ? murder_tag : "#{murder_tag}.tgz"
        "#{murder_temp_path}/#{name}"
      end

      def murder_torrent
        return "#{murder_temp_path}/#{murder_tag}.tree.torrent" if murder_tree?

        "#{murder_payload}.torrent"
      end

      def local_torrent
        File.join(murder_temp_path, File.basename(murder_torrent))
      end

      def tracker_address
        host = murder_tracker
        S.announce_ip(host) || host.hostname
      end

      # Stops, on `hosts`, every murder process whose pidfile in the run directory
      # matches `pattern` (a name, or a glob like "seed-*.pid"). Nothing running
      # is fine: `murder stop` succeeds quietly then.
      def stop_murder(hosts, pattern)
        murder = remote_murder
        run = murder_run_dir
        on hosts do
          next unless test(:test, "-d", *S.args(run))

          capture(:find, *S.args(run), "-maxdepth", "1", "-name", S.args(pattern).first).split("\n").each do |pidfile|
            execute murder, *S.args("stop", "--pidfile", pidfile)
          end
        end
      end
    end
  end
end
