# frozen_string_literal: true

require_relative "support"

module Capistrano
  module Murder
    # What murder's tasks share (both plugins include it): roles, Murder's
    # arguments, remote paths. Methods of the plugin, so not usable inside
    # `on` blocks (SSHKit's backend): take values into local variables first.
    #
    # Arguments come from ENV first (Murder's command line: `cap ...
    # tag=NAME`), then the `default_` settings.
    #
    # @api private
    module Helpers
      # Short for {Support}.
      S = Support

      # Roles, as in Murder: peers are all servers that take releases; the tracker
      # and the seeder are the first peer unless roles say otherwise.
      #
      # @return [Array<Capistrano::Configuration::Server>] the `:peer` role's
      #   servers, or else every release role's, as filtered for this run
      def murder_peers
        explicit = roles(:peer)
        # As `on` sees them: HOSTS, ROLES and :filter apply. The deploy's
        # barrier waits for a vote from each of these, and a server that
        # `on` skips never votes.
        Capistrano::Configuration.env.filter(explicit.empty? ? release_roles(:all) : explicit)
      end

      # Invokes each clean-up task, whatever the one before it did: a failed
      # one is named, and the first error stays the task's.
      #
      # @param steps [Array<String>] task names
      # @return [void]
      def murder_clean_up(*steps)
        steps.each do |step|
          invoke step
        rescue StandardError => e
          run_locally { warn "murder: #{step} failed: #{e.message.lines.first&.strip}" }
        end
      end

      # Every host that runs a tracker: each `:tracker` server (several make
      # the torrent's BEP 12 announce-list, and peers announce to all of
      # them, so a tracker lost during the download does not stop a
      # deploy; each must be reachable when the trackers start), else the
      # first peer.
      #
      # @return [Array<Capistrano::Configuration::Server>]
      # @raise [Capistrano::Murder::Error] when there are no servers
      def murder_trackers
        explicit = roles(:tracker)
        return explicit unless explicit.empty?

        [murder_peers.first || raise(Capistrano::Murder::Error, "no servers to deploy to")]
      end

      # @return [Capistrano::Configuration::Server] the first `:seeder`
      #   server, else the first peer
      # @raise [Capistrano::Murder::Error] when there are no servers
      def murder_seeder
        roles(:seeder).first || murder_peers.first || raise(Capistrano::Murder::Error, "no servers to deploy to")
      end

      # `servers`, all of which this run must reach to act as `what` (the
      # tasks that start trackers, make the torrent and seed call it): `on`
      # silently skips a server that HOSTS=, ROLES= or :filter leave out,
      # and the run would go on without its tracker or seeder. (Stopping
      # and cleaning up skip such servers, as `on` does.)
      #
      # @param servers [Array<Capistrano::Configuration::Server>]
      # @param what [String] the role, for the message
      # @return [Array<Capistrano::Configuration::Server>] `servers`
      # @raise [Capistrano::Murder::Error] naming those left out
      def within_filter!(servers, what)
        left_out = servers - Capistrano::Configuration.env.filter(servers)
        return servers if left_out.empty?

        raise Capistrano::Murder::Error,
              "the #{what} #{left_out.join(', ')} is left out of this run (HOSTS=, ROLES= or :filter): " \
              "include it, or give the #{what} role to a server the run includes"
      end

      # @return [Array<Capistrano::Configuration::Server>] the peers, the
      #   trackers and the seeder, each once
      # @raise [Capistrano::Murder::Error] when there are no servers
      def murder_hosts
        (murder_peers + murder_trackers + [murder_seeder]).uniq
      end

      # @return [String] ENV["tag"], else `:default_tag`
      # @raise [Capistrano::Murder::Error] when it is empty or not a safe
      #   name ({Support.tag})
      def murder_tag
        S.tag(ENV.fetch("tag", fetch(:default_tag)))
      end

      # @return [String] ENV["temp_path"], else `:default_temp_path`
      # @raise [Capistrano::Murder::Error] when it is not a safe absolute path
      #   ({Support.absolute_path})
      def murder_temp_path
        S.absolute_path(ENV.fetch("temp_path", fetch(:default_temp_path)), "temp_path")
      end

      # @return [String] ENV["files_path"], else `:default_seeder_files_path`
      # @raise [Capistrano::Murder::Error] when it is not a safe absolute path
      def murder_files_path
        S.absolute_path(ENV.fetch("files_path", fetch(:default_seeder_files_path)), "files_path")
      end

      # @return [String] ENV["destination_path"], else
      #   `:default_destination_path`
      # @raise [Capistrano::Murder::Error] when it is not a safe absolute path
      def murder_destination_path
        S.absolute_path(ENV.fetch("destination_path", fetch(:default_destination_path)), "destination_path")
      end

      # @return [String] the murder binary on the hosts
      #   (`:remote_murder_path`/murder)
      # @raise [Capistrano::Murder::Error] when :remote_murder_path is not
      #   absolute or holds whitespace ({Support.remote_murder_path})
      def remote_murder
        "#{S.remote_murder_path(fetch(:remote_murder_path))}/murder"
      end

      # @return [String] where murder's pidfiles are on the hosts
      #   (`:remote_murder_path`/run)
      def murder_run_dir
        "#{S.remote_murder_path(fetch(:remote_murder_path))}/run"
      end

      # Whether Murder's tasks ship a tree (no tar: every file in place, links
      # and modes kept, earlier tags reused): with `tree=1` or :murder_tree,
      # except in the deploy strategy's archive deploy; else the seeder
      # shares TEMP/TAG.tgz (the file itself with `path_is_file=1`).
      #
      # @return [Boolean] whether a tree is shipped
      # @raise [Capistrano::Murder::Error] when `tree=1` comes with
      #   `path_is_file=1`
      def murder_tree?
        # The deploy strategy's archive deploy ships the archive it packed,
        # whatever tree=1 or :murder_tree say about Murder's manual tasks.
        return false if fetch(:murder_prepacked, nil)

        tree = S.truthy?("tree") || fetch(:murder_tree, false)
        raise Error, "tree=1 and path_is_file=1 do not go together" if tree && S.truthy?("path_is_file")

        tree
      end

      # @return [String] what the seeder shares: files_path for a tree, else
      #   TEMP/TAG.tgz (the file itself with `path_is_file=1`, under that
      #   name as in 2010)
      # @raise [Capistrano::Murder::Error] for a bad argument
      def murder_payload
        return murder_files_path if murder_tree?

        "#{murder_temp_path}/#{murder_tag}.tgz"
      end

      # The file `path_is_file` copies to the payload, unless it is the
      # payload itself (copied onto itself, then removed by
      # clean_temp_files).
      #
      # @return [String] files_path
      # @raise [Capistrano::Murder::Error] when files_path is TEMP/TAG.tgz
      def murder_file_to_copy
        files = murder_files_path
        if S.same_path?(files, murder_payload)
          raise Error, "files_path #{files} is where murder's downloads go (temp_path/TAG.tgz), " \
                       "which clean_temp_files removes: choose another tag or temp_path"
        end
        files
      end

      # @return [String] the torrent's path on the hosts: TEMP/TAG.tree.torrent
      #   for a tree, else the payload's path + ".torrent"
      # @raise [Capistrano::Murder::Error] for a bad argument
      def murder_torrent
        return "#{murder_temp_path}/#{murder_tag}.tree.torrent" if murder_tree?

        "#{murder_payload}.torrent"
      end

      # @return [String] where the torrent goes on this machine (temp_path,
      #   the same name)
      # @raise [Capistrano::Murder::Error] for a bad argument
      def local_torrent
        File.join(murder_temp_path, File.basename(murder_torrent))
      end

      # @return [Array<Array(String, Integer)>] each tracker's address (its
      #   `murder_ip` property or IP address, else its host name) and
      #   `:tracker_port`, in role order
      # @raise [Capistrano::Murder::Error] when there are no servers
      def tracker_addresses
        port = fetch(:tracker_port)
        murder_trackers.map { |host| [S.announce_ip(host) || host.hostname, port] }
      end

      # Runs murder:peer. If it fails (one host is enough), the downloads
      # still running on the other hosts are stopped before the error goes
      # on: none of them goes on for its stall timeout after the task has
      # failed and its seed is gone.
      #
      # @return [void]
      # @raise [StandardError] what murder:peer raised
      def peer_or_stop_peering
        invoke "murder:peer"
      rescue StandardError
        begin
          invoke "murder:stop_peering"
        rescue StandardError => e
          warn "murder: stopping the other hosts' downloads failed too: #{e.message.lines.first&.strip}"
        end
        raise
      end

      # Stops, on `hosts`, every murder process whose pidfile in the run directory
      # matches `pattern` (a name, or a glob like "seed-*.pid"). Nothing running
      # is fine: `murder stop` succeeds quietly then.
      #
      # @param hosts [Array<Capistrano::Configuration::Server>, Capistrano::Configuration::Server]
      #   where to stop them
      # @param pattern [String] a pidfile name or glob (`find -name`)
      # @return [void]
      # @raise [SSHKit::Runner::ExecuteError] when a command fails on a host
      def stop_murder(hosts, pattern)
        murder = remote_murder
        run = murder_run_dir
        on hosts do
          next unless test(:test, "-d", *S.args(run))

          capture(:find, *S.args(run), "-maxdepth", "1", "-name", S.args(pattern).first).split("\n").each do |pidfile|
            execute *S.command(murder, "stop", "--pidfile", pidfile)
          end
        end
      end
    end
  end
end
