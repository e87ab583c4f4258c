# frozen_string_literal: true

# The murder deploy strategy's tasks (Capistrano::Murder::SCM).

# Ships the tree of `torrent` (served from this process by `tracker`) to
# every server: one SSH command per host checks the murder binary, takes
# the deploy ticket (the torrent and the closed swarm's secret) on stdin, brings in what the host's earlier releases
# hold, downloads the rest and stages the release beside release_path. Once
# every host has staged it, every host renames it into place; if any host
# failed, none does (the others keep theirs staged, for the next deploy to
# reuse), and the error names each failed host.
def murder_ship_tree(torrent, tracker, secret, seeder)
  remote = Capistrano::Murder::Remote
  binary = fetch(:murder_binary)
  raise Capistrano::Murder::Error, "murder binary #{binary} not found" unless File.executable?(binary)

  sha = remote.sha256(binary)
  # One round trip: hosts whose murder is not current get it, passing it on;
  # none when the last deploy from here left this binary on every host.
  record = File.join(File.expand_path(fetch(:murder_cache_path)), "binary-hosts.json")
  relay_server = relay_host
  holders = (murder_peers + [relay_server].compact).uniq
  invoke "murder:distribute_files" unless S.binary_known?(record, sha, holders)
  murder = remote_murder
  dir = File.dirname(murder)
  # Quoted for the remote shell like every argument: a `~` would not expand.
  releases = S.absolute_path(releases_path.to_s, "deploy_to's releases_path")
  dest = release_path.to_s
  tag = File.basename(dest)
  reuse = S.reuse_mode(fetch(:murder_reuse))
  linger = fetch(:murder_linger)
  # The closed swarm's secret travels only in the ticket, over SSH. Hosts
  # that kept the last deploy's torrent get the difference from it, a few
  # KB; the others, the whole torrent (they say so, and go again).
  base_record = File.join(File.expand_path(fetch(:murder_cache_path)), "ticket-base-#{fetch(:stage, 'all')}.torrent")
  tickets = remote::Tickets.new(torrent.to_bencode, secret: secret, record: base_record)
  peers = murder_peers
  barrier = remote::Barrier.new(peers.size)
  # Written from every host's thread.
  lock = Mutex.new
  results = {}
  failures = {}
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  # Servers that cannot connect here reach the tracker and the seed
  # through the relay; its end aborts every host, as the seed's does.
  relay = relay_server && murder_start_relay(relay_server, binary, murder, sha, [tracker.port, seeder.port])
  watcher = Thread.new { Capistrano::Murder::Progress.new(peers.size) { tracker.stats }.watch }
  conversations = remote::Conversations.new
  seed_watch = conversations.watch(seeder)
  relay_watch = relay && conversations.watch(relay)
  begin
    S.without_pty do
      on peers, in: :parallel do |host|
        key = S.host_key(host)
        ip = S.announce_ip(host)
        args = [*(reuse ? ["--reuse", releases, "--reuse-mode", reuse] : []), *(ip ? ["--ip", ip] : []),
                "--linger", linger, "--pidfile", "#{dir}/run/peer-#{tag}.pid", "--progress", "json", "--wait-to-place",
                "--ticket-base", "#{dir}/run/ticket-base.torrent"]
        command = remote.peer_command(murder: murder, sha256: sha, releases: releases, dest: dest, args: args)
        installed = false
        ticket = tickets.first
        begin
          out = capture(*command, interaction_handler: conversations.start(ticket, barrier, key))
          summary = remote.reports(out).find { |e| e["event"] == "complete" }
          # SSHKit takes a command that sent no exit status (SSH's
          # `exit-signal`: its remote shell was killed) for a success.
          raise Capistrano::Murder::Error, remote::NO_SUMMARY unless summary

          lock.synchronize { results[key] = summary }
        rescue SSHKit::Command::Failed => e
          # One round trip when the host's murder is current; else install it
          # and go again (the first deploy, or a new version of murder).
          if (uname = remote.outdated(e.message)) && !installed
            # Never a binary that cannot run there (a deployer's own, of
            # another OS or CPU): the host fails, saying so.
            wrong = ::Murder::Binary.mismatch(binary, { key => uname })
            raise Capistrano::Murder::Error, wrong if wrong

            installed = true
            S.install_binary(self, binary, dir, sha)
            retry
          end
          # A host that does not hold the base of the difference (a new host,
          # or one whose last deploy failed early) takes the whole torrent.
          if (whole = tickets.after_failure(key, ticket, e.message))
            ticket = whole
            retry
          end
          lock.synchronize { failures[key] = S.reason(e) }
        end
      rescue StandardError => e
        # Whatever failed, installing the binary included: named, not raised,
        # so that this thread still votes.
        lock.synchronize { failures[key] = e.message.lines.first&.strip }
      ensure
        # A host that did not stage votes no (a vote it made counts first):
        # the others must not wait for it forever.
        barrier.vote(key, false)
      end
    end
  ensure
    watcher&.kill
    seed_watch&.kill
    relay_watch&.kill
    relay_failure = relay&.failure
    relay&.stop
  end
  unless failures.empty?
    # Hosts that fail after all of them staged it (renaming it into place,
    # say) fail alone: the others were told to place it.
    where = barrier.unanimous? ? "the release was placed on the other hosts" : "the release was placed on no host"
    # A failure the watcher had no time to see counts too.
    seed = remote.seed_failed(conversations.aborted || seeder.failure, relay: relay_server,
                                                                       relay_failure: relay_failure)
    at, settings = if relay
                     ["the relay on #{relay_server}", ":tracker_port and :murder_seed_port"]
                   else
                     ["this machine", ":murder_deployer_ip, :tracker_port and :murder_seed_port"]
                   end
    hint = remote.unreachable_hint(failures.values, tracker.port, seeder.port, settings, at: at)
    raise Capistrano::Murder::Error,
          "murder: #{seed}#{where}; failed: " + failures.map { |h, why| "#{h}: #{why}" }.join("; ") + hint
  end
  # Every peer ran this binary (checked by its digest before it started),
  # and kept this torrent as the next ticket's base.
  S.remember_binary(record, sha, holders)
  tickets.keep
  if (line = tickets.summary(peers.size, last: "the last deploy's torrent"))
    run_locally { info line }
  end
  Capistrano::Murder::Progress.hosts(results)
  Capistrano::Murder::Progress.summary(results, Process.clock_gettime(Process::CLOCK_MONOTONIC) - started,
                                       hash_seconds: fetch(:murder_hash_seconds, nil), torrent: torrent)
end

# Starts the relay on `server` (:murder_relay), installing this deploy's
# murder there first when it has another (as a peer's command does).
def murder_start_relay(server, binary, murder, sha, ports)
  installed = false
  begin
    ::Murder::Relay.new(server, ssh: S.net_ssh(server), murder: murder, sha256: sha, ports: ports).start
  rescue ::Murder::Relay::Outdated => e
    raise if installed

    wrong = ::Murder::Binary.mismatch(binary, { S.host_key(server) => e.uname })
    raise Capistrano::Murder::Error, wrong if wrong

    on(server) { S.install_binary(self, binary, File.dirname(murder), sha) }
    installed = true
    retry
  end
end

namespace :murder do
  namespace :scm do
    desc "Ship the revision through the swarm into release_path (a tree, or one archive)"
    task :create_release do
      if S.tree?(fetch(:murder_release))
        tree, revision = export_tree
        set :murder_revision, revision
        serve_tree(tree) { |*served| murder_ship_tree(*served) }
        next
      end
      tag = File.basename(release_path.to_s)
      local_dir = Dir.mktmpdir("murder-release-")
      begin
        archive = File.join(local_dir, "#{tag}.tgz")
        set :murder_revision, pack(archive)
        run_locally { info "murder: packed #{File.size(archive)} bytes into #{archive}" }

        # The release takes the place of Murder's tag and destination.
        ENV["tag"] = tag
        ENV["destination_path"] = releases_path.to_s
        ENV.delete("no_tag_directory")
        ENV.delete("path_is_file")
        set :murder_prepacked, archive
        begin
          invoke "murder:distribute_files"
          if fetch(:murder_seed_locally)
            # This machine tracks and seeds, through the native extension:
            # the release never takes a detour through a seeder host.
            seed_locally(archive, tag) { peer_or_stop_peering }
          else
            invoke "murder:start_tracker"
            invoke "murder:create_torrent"
            invoke "murder:start_seeding"
            peer_or_stop_peering
          end
        ensure
          stops = fetch(:murder_seed_locally) ? [] : %w[murder:stop_seeding murder:stop_tracker]
          murder_clean_up(*stops, "murder:clean_temp_files")
        end
      ensure
        FileUtils.rm_rf(local_dir)
      end
    end

    desc "Record the revision that was shipped"
    task :set_current_revision do
      set :current_revision, fetch(:murder_revision)
    end
  end
end
