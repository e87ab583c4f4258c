# frozen_string_literal: true

# A deploy strategy: in a Capfile, in place of the git plugin,
#
#   require "capistrano/murder"
#   require "capistrano/murder/scm"
#   install_plugin Capistrano::Murder::SCM
#
# and `cap STAGE deploy` packs the revision once on this machine (from the
# local git repository, or from the directory set by :murder_source_dir),
# ships it through the swarm and extracts it into each server's
# release_path. The rest of Capistrano's flow (shared links, `current`,
# rollback, cleanup of old releases) is unchanged.

require "capistrano/scm/plugin"
require "tmpdir"
require_relative "support"

module Capistrano
  module Murder
    class SCM < ::Capistrano::SCM::Plugin
      S = Support

      def set_defaults
        set_if_empty :murder_source_dir, nil
        set_if_empty :murder_repo_path, "."
        set_if_empty :branch, "HEAD"
        set_if_empty :murder_deployer_ip, nil
        set_if_empty :murder_compression, :gzip
      end

      def register_hooks
        after "deploy:new_release_path", "murder:scm:create_release"
        before "deploy:set_current_revision", "murder:scm:set_current_revision"
      end

      def define_tasks
        eval_rakefile File.expand_path("../../../recipes/murder_scm.rake", __dir__)
      end

      # Packs the release into `archive` on this machine; returns its revision.
      def pack(archive)
        gzip = S.gzip?(fetch(:murder_compression))
        if (dir = fetch(:murder_source_dir))
          dir = File.expand_path(dir)
          raise Error, "murder_source_dir #{dir} is not a directory" unless File.directory?(dir)

          run_locally!("tar", gzip ? "-czf" : "-cf", archive, "--exclude=.git", "-C", dir, ".")
          "dir:#{File.basename(dir)}@#{File.mtime(dir).utc.strftime('%Y%m%d%H%M%S')}"
        else
          repo = File.expand_path(fetch(:murder_repo_path))
          revision = run_locally!("git", "-C", repo, "rev-parse", "--verify", "#{fetch(:branch)}^{commit}").strip
          run_locally!("git", "-C", repo, "archive", "--format=#{gzip ? 'tar.gz' : 'tar'}", "-o", archive, revision)
          revision
        end
      end

      # Runs a tracker and a seeder of `archive` in this process while the
      # block runs; the torrent goes where murder:peer looks for it.
      def seed_locally(archive, tag)
        require "murder"
        require "socket"
        ip = fetch(:murder_deployer_ip) || local_address_towards(release_roles(:all).first)
        tracker = ::Murder::Tracker.new(port: fetch(:tracker_port), bind: "0.0.0.0",
                                        interval: fetch(:murder_tracker_interval)).start
        torrent = ::Murder::Torrent.create(archive, tracker: "#{ip}:#{tracker.port}",
                                                   piece_length: fetch(:murder_piece_length))
        temp = S.absolute_path(ENV.fetch("temp_path", fetch(:default_temp_path)), "temp_path")
        FileUtils.mkdir_p(temp)
        torrent.write(File.join(temp, "#{tag}.tgz.torrent"))
        tracker.allow(torrent)
        seeder = ::Murder::Seeder.new(torrent, archive, ip: ip).start
        set :murder_local_tracker, [ip, tracker.port]
        yield
      ensure
        seeder&.stop
        tracker&.stop
      end

      private

      # This machine's address on the route to `host` (no packet is sent).
      def local_address_towards(host)
        address = Addrinfo.udp(host.hostname, 9).connect.local_address.ip_address
        raise Error, "cannot tell this machine's address towards #{host}; set :murder_deployer_ip" if address.nil?

        address
      end

      def run_locally!(*command)
        out, status = Open3.capture2e(*command)
        raise Error, "#{command.first} failed: #{out.strip}" unless status.success?

        out
      end
    end
  end
end

require "open3"
