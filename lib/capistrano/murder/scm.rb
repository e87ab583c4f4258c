# frozen_string_literal: true

# A deploy strategy: in a Capfile, in place of the git plugin,
#
#   require "capistrano/murder"
#   require "capistrano/murder/scm"
#   install_plugin Capistrano::Murder::SCM
#
# and `cap STAGE deploy` ships the revision (from the local git repository,
# or the directory :murder_source_dir) to every server's release_path
# through the swarm, as a tree: no tar, no gzip, no extraction. This machine
# makes the torrent (hashing only files that changed since the last deploy),
# tracks and seeds it; each server brings in what its earlier releases hold
# (hard links, or copies with :murder_reuse :copy) and downloads the rest,
# all in one SSH command, then renames the staged release into place. The
# rest of Capistrano's flow (shared links, `current`, rollback, cleanup of
# old releases) is unchanged. `set :murder_release, :archive` ships one
# archive instead (Murder's way; with a seeder host unless
# :murder_seed_locally).

require "capistrano/scm/plugin"
require "fileutils"
require "open3"
require "tmpdir"
require_relative "support"
require_relative "helpers"
require "murder/relay"


module Capistrano
  module Murder
    # The murder deploy strategy, in place of the git plugin: `cap STAGE
    # deploy` ships the revision (from the local git repository, or the
    # directory :murder_source_dir) to every server's release_path through
    # the swarm, as a tree: no tar, no extraction. This machine makes the
    # torrent (hashing only files changed since the last deploy), tracks and
    # seeds it; each server brings in what its earlier releases hold and
    # downloads the rest in one SSH command, and the release is renamed into
    # place on every server once all of them staged it. The rest of
    # Capistrano's flow is unchanged. `set :murder_release, :archive` ships
    # one archive instead (Murder's way). The tasks are in
    # recipes/murder_scm.rake.
    #
    # Settings, with their defaults: `:murder_release` (`:tree`, or
    # `:archive`), `:murder_source_dir` (nil: the git repository),
    # `:murder_repo_path` ("."), `:branch` ("HEAD"), `:murder_deployer_ip`
    # (nil: the local address of the route to the first server),
    # `:murder_compression` (`:gzip` or `:none`, for an archive),
    # `:murder_reuse` (`:link`, `:copy` or `:none`), `:murder_closed_swarm`
    # (true: a tree goes out in a closed swarm, with a fresh secret per
    # deploy), `:murder_seed_port` (0: any free port; the TCP port this
    # machine's seed listens on, for a firewall to open),
    # `:murder_exclude` (`[".git"]`: names of files and directories a
    # release leaves out, at any depth), `:murder_relay` (false; true: the
    # servers reach this machine's tracker and seed through the first
    # `:seeder` server, over SSH, for a deployer they cannot connect to)
    # and `:murder_cache_path` ("tmp/murder"), besides those of {Tasks}.
    #
    # The methods below are for the task file; they run on this machine.
    #
    # @example Capfile
    #   require "capistrano/murder"
    #   require "capistrano/murder/scm"
    #   install_plugin Capistrano::Murder::SCM
    class SCM < ::Capistrano::SCM::Plugin
      include Helpers
      # Short for {Support}.
      #
      # @api private
      S = Support

      # Capistrano's hook: sets every setting that is not set yet to its
      # default (see the class comment).
      #
      # @api private
      # @return [void]
      def set_defaults
        Support.keep_ssh_alive
        set_if_empty :murder_release, :tree
        set_if_empty :murder_source_dir, nil
        set_if_empty :murder_repo_path, "."
        # Capistrano's own defaults (loaded first) name "master", for its
        # git plugin's remote; this strategy ships what is checked out here
        # unless deploy.rb or a stage names a branch (they load after this).
        set :branch, "HEAD" if fetch(:branch).nil? || fetch(:branch) == "master"
        set_if_empty :murder_deployer_ip, nil
        set_if_empty :murder_compression, :gzip
        set_if_empty :murder_reuse, :link
        set_if_empty :murder_cache_path, "tmp/murder"
        set_if_empty :murder_closed_swarm, true
        set_if_empty :murder_seed_port, 0
        # A :murder_source_dir that is a checkout must not ship its
        # repository (an archive from it never did).
        set_if_empty :murder_exclude, [".git"]
        set_if_empty :murder_relay, false
      end

      # Capistrano's hook: runs `murder:scm:create_release` after
      # `deploy:new_release_path` and `murder:scm:set_current_revision`
      # before `deploy:set_current_revision`.
      #
      # @api private
      # @return [void]
      def register_hooks
        after "deploy:new_release_path", "murder:scm:create_release"
        before "deploy:set_current_revision", "murder:scm:set_current_revision"
      end

      # Capistrano's hook: defines the tasks from recipes/murder_scm.rake.
      #
      # @api private
      # @return [void]
      def define_tasks
        eval_rakefile File.expand_path("../../../recipes/murder_scm.rake", __dir__)
      end

      # The tree to ship and its revision: :murder_source_dir as it is, or
      # the revision of :branch checked out into this machine's cache by
      # git itself (`read-tree -u` rewrites only the files that changed, so
      # the others keep the times and inodes the hash cache knows them by).
      #
      # @api private
      # @return [Array(String, String)] the tree's directory and its revision
      #   (a commit, or "dir:NAME@TIME" for :murder_source_dir)
      # @raise [Capistrano::Murder::Error] when :murder_source_dir is not a
      #   directory, or git fails
      def export_tree
        if (dir = fetch(:murder_source_dir))
          dir = File.expand_path(dir)
          raise Error, "murder_source_dir #{dir} is not a directory" unless File.directory?(dir)

          return [dir, S.dir_revision(dir)]
        end
        repo = File.expand_path(fetch(:murder_repo_path))
        revision = run_locally!("git", "-C", repo, "rev-parse", "--verify", "#{fetch(:branch)}^{commit}").strip
        git_dir = File.expand_path(run_locally!("git", "-C", repo, "rev-parse", "--git-dir").strip, repo)
        tree = File.join(cache_path, "tree")
        FileUtils.mkdir_p(tree)
        env = { "GIT_DIR" => git_dir, "GIT_INDEX_FILE" => File.join(cache_path, "index") }
        run_locally!(env, "git", "--work-tree=#{tree}", "read-tree", "--reset", "-u", revision)
        [tree, revision]
      end

      # Where this machine keeps the exported tree and the hash cache.
      #
      # @api private
      # @return [String] :murder_cache_path, absolute
      def cache_path
        File.expand_path(fetch(:murder_cache_path))
      end

      # Tracks and seeds `dir` from this process while the block runs; the
      # block gets the torrent (made here, piece-aligned, hashing only files
      # changed since the last deploy) and the tracker. Sets
      # :murder_hash_seconds to how long making the torrent took. The
      # tracker and the seeder serve from native threads and are stopped
      # when the block returns or raises.
      #
      # @api private
      # @param dir [String] the tree
      # @yield [torrent, tracker, secret, seeder]
      # @yieldparam torrent [::Murder::Torrent]
      # @yieldparam tracker [::Murder::Tracker]
      # @yieldparam secret [String, nil] the closed swarm's secret, fresh for
      #   this deploy (nil with `set :murder_closed_swarm, false`)
      # @yieldparam seeder [::Murder::Seeder] the seed, started
      # @return [Object] what the block returned
      # @raise [::Murder::Error] from the engine (see {::Murder::Torrent.create},
      #   {::Murder::Tracker#start}, {::Murder::Seeder#start})
      # @raise [SocketError, SystemCallError] when this machine's address
      #   towards the first server cannot be told (set :murder_deployer_ip)
      def serve_tree(dir)
        require "murder"
        relay = relay_host
        # Through a relay, the servers reach this machine at the relay's
        # address, on the same port numbers.
        ip = relay ? relay_address(relay) : deployer_ip
        secret = ::Murder.generate_secret if fetch(:murder_closed_swarm)
        # The dashboard of a closed swarm needs a token; this one lives as
        # long as this deploy's tracker.
        operator = SecureRandom.hex(16)
        tracker = ::Murder::Tracker.new(port: fetch(:tracker_port), interval: 1,
                                        max_peers_per_address: fetch(:murder_max_peers_per_address),
                                        operator_token: operator).start
        started = clock
        torrent = ::Murder::Torrent.create(dir, tracker: "#{ip}:#{tracker.port}", align: true,
                                                piece_length: S.piece_length(fetch(:murder_piece_length)),
                                                hash_cache: File.join(cache_path, "hashes.json"),
                                                exclude: exclude)
        set :murder_hash_seconds, clock - started
        swarm = secret ? "a closed swarm (a fresh secret for this deploy, sent over SSH)" : "an open swarm"
        tracker.allow(torrent, secret: secret)
        # Through a relay, the seed announces to the tracker here, with the
        # relay's address; the torrent names the relay, for the servers.
        announce_to = relay ? ["127.0.0.1:#{tracker.port}"] : []
        seeder = ::Murder::Seeder.new(torrent, dir, ip: ip, port: seed_port, lazy_check: true, secret: secret,
                                                    announce_to: announce_to).start
        # The ports servers must reach (a firewall's question).
        via = relay ? " through the relay on #{relay}" : ""
        dashboard = relay ? "127.0.0.1" : S.url_host(ip)
        run_locally do
          info "murder: #{torrent.name} goes out in #{swarm}, seeded from #{S.url_host(ip)}:#{seeder.port}#{via}; " \
               "dashboard http://#{dashboard}:#{tracker.port}/?token=#{operator}"
        end
        yield torrent, tracker, secret, seeder
      ensure
        # The tracker stops even if stopping the seeder raised.
        begin
          seeder&.stop
        ensure
          tracker&.stop
        end
      end

      # Seeds `archive` (Murder's way, :murder_release :archive) from this
      # process while the block runs; the torrent goes where murder:peer
      # looks for it (TEMP/TAG.tgz.torrent), and :murder_local_tracker is set
      # to the tracker's `[ip, port]`. Both are stopped when the block
      # returns or raises.
      #
      # @api private
      # @param archive [String] the archive on this machine
      # @param tag [String] the release's tag
      # @yield while it seeds
      # @return [Object] what the block returned
      # @raise [::Murder::Error] from the engine (see {::Murder::Torrent.create},
      #   {::Murder::Tracker#start}, {::Murder::Seeder#start})
      # @raise [Capistrano::Murder::Error] for a bad temp_path
      # @raise [SocketError, SystemCallError] when this machine's address
      #   towards the first server cannot be told (set :murder_deployer_ip)
      def seed_locally(archive, tag)
        require "murder"
        ip = deployer_ip
        tracker = ::Murder::Tracker.new(port: fetch(:tracker_port),
                                        interval: fetch(:murder_tracker_interval),
                                        max_peers_per_address: fetch(:murder_max_peers_per_address)).start
        torrent = ::Murder::Torrent.create(archive, tracker: "#{ip}:#{tracker.port}",
                                                   piece_length: S.piece_length(fetch(:murder_piece_length)))
        temp = S.absolute_path(ENV.fetch("temp_path", fetch(:default_temp_path)), "temp_path")
        FileUtils.mkdir_p(temp)
        torrent.write(File.join(temp, "#{tag}.tgz.torrent"))
        tracker.allow(torrent)
        seeder = ::Murder::Seeder.new(torrent, archive, ip: ip, port: seed_port).start
        set :murder_local_tracker, [ip, tracker.port]
        yield
      ensure
        # The tracker stops even if stopping the seeder raised.
        begin
          seeder&.stop
        ensure
          tracker&.stop
        end
      end

      # Packs the release into `archive` on this machine: a tar of
      # :murder_source_dir (without what :murder_exclude names), or `git
      # archive` of :branch (what git tracks, less `export-ignore`);
      # gzip'd unless :murder_compression is :none.
      #
      # @api private
      # @param archive [String] the file to write
      # @return [String] the revision (a commit, or "dir:NAME@TIME")
      # @raise [Capistrano::Murder::Error] when :murder_source_dir is not a
      #   directory, or tar or git fails
      def pack(archive)
        gzip = S.gzip?(fetch(:murder_compression))
        if (dir = fetch(:murder_source_dir))
          dir = File.expand_path(dir)
          raise Error, "murder_source_dir #{dir} is not a directory" unless File.directory?(dir)

          run_locally!("tar", gzip ? "-czf" : "-cf", archive, *exclude.map { |glob| "--exclude=#{glob}" },
                       "-C", dir, ".")
          S.dir_revision(dir)
        else
          repo = File.expand_path(fetch(:murder_repo_path))
          revision = run_locally!("git", "-C", repo, "rev-parse", "--verify", "#{fetch(:branch)}^{commit}").strip
          run_locally!("git", "-C", repo, "archive", "--format=#{gzip ? 'tar.gz' : 'tar'}", "-o", archive, revision)
          revision
        end
      end

      # @api private
      # @return [Float] seconds of the monotonic clock
      def clock = Process.clock_gettime(Process::CLOCK_MONOTONIC)

      private

      # @api private
      # @return [Array<String>] :murder_exclude, checked
      # @raise [Capistrano::Murder::Error] when it is not a list of names
      def exclude = S.exclude(fetch(:murder_exclude))

      # @api private
      # @return [Integer] :murder_seed_port, checked (0: any free port)
      # @raise [Capistrano::Murder::Error] when it is no TCP port
      def seed_port = S.port(fetch(:murder_seed_port), "murder_seed_port")

      # @api private
      # @return [Capistrano::Configuration::Server, nil] the server that
      #   relays this machine's tracker and seed (`:murder_relay`: the first
      #   `:seeder`, else the first server), nil without a relay
      def relay_host
        murder_seeder if fetch(:murder_relay)
      end

      # The address the other servers reach the relay at: its `murder_ip`,
      # else its name when that is an address, else the name as this
      # machine resolves it.
      #
      # @api private
      # @param host [Capistrano::Configuration::Server]
      # @return [String]
      # @raise [Capistrano::Murder::Error] when it cannot be told
      def relay_address(host)
        S.announce_ip(host) || Addrinfo.tcp(host.hostname, 0).ip_address
      rescue SocketError => e
        raise Error, "murder_relay: cannot tell #{host}'s address (#{e.message}); set its murder_ip"
      end

      # @api private
      # @return [String] :murder_deployer_ip, else this machine's address
      #   towards the first server
      def deployer_ip
        fetch(:murder_deployer_ip) || local_address_towards(release_roles(:all).first)
      end

      # This machine's address on the route to `host` (no packet is sent).
      #
      # @api private
      # @param host [Capistrano::Configuration::Server]
      # @return [String]
      # @raise [SocketError, SystemCallError] when there is no route
      # @raise [Capistrano::Murder::Error] when the route has no address
      def local_address_towards(host)
        address = Addrinfo.udp(host.hostname, 9).connect.local_address.ip_address
        raise Error, "cannot tell this machine's address towards #{host}; set :murder_deployer_ip" if address.nil?

        address
      end

      # Runs a command here, its standard error merged into its output.
      #
      # @api private
      # @param command [Array<Hash, String>] an optional environment Hash,
      #   then the command and its arguments (no shell)
      # @return [String] its output
      # @raise [Capistrano::Murder::Error] when it fails
      def run_locally!(*command)
        out, status = Open3.capture2e(*command)
        raise Error, "#{command.grep(String).first} failed: #{out.strip}" unless status.success?

        out
      end
    end
  end
end
