# frozen_string_literal: true

require_relative "support"

module Capistrano
  module Murder
    # Gets the murder binary to many hosts without a central copy: this
    # machine uploads it to a few hosts, then in rounds every host that has
    # it hands it to up to +fanout+ more (`murder serve-file`), which fetch
    # it with curl, wget or bash's /dev/tcp and check its SHA-256 before
    # they install it. A host that cannot fetch it gets it from here.
    # Used by `murder:distribute_files`.
    #
    # @api private
    class BinaryDistribution
      # Short for {Support}.
      S = Support

      # The script a host runs with `sh -c` to fetch the binary: `$1` the
      # holder's address (an IPv6 one goes into the URL in brackets), `$2` its
      # port, `$3` the install directory, `$4` the SHA-256 the file must have,
      # `$5` the seconds it may take in all ({FETCH_SECONDS}). Tries again
      # 0.1 s after a failure (the holder may not be serving yet), 50 times
      # at most (a refused port fails fast) and until then; a connection
      # takes at most 2 s to open (a port whose packets are dropped). A file
      # with another digest is removed, and the script fails.
      FETCH = <<~'SH'
        src=${1#[} port=$2 dir=$3 sha=$4 out="$3/murder.fetch" limit=${5:-35}
        src=${src%]}
        case $src in *:*) url="http://[$src]:$port/murder" ;; *) url="http://$src:$port/murder" ;; esac
        mkdir -p "$dir" "$dir/run" || exit 1
        end=$(( $(date +%s) + limit )) tries=0
        until
          left=$(( end - $(date +%s) ))
          [ "$left" -gt 0 ] && [ "$tries" -lt 50 ] || { rm -f "$out"; exit 1; }
          tries=$((tries + 1))
          if command -v curl >/dev/null 2>&1; then
            curl -fsSg --connect-timeout 2 --max-time "$left" "$url" -o "$out"
          elif command -v wget >/dev/null 2>&1; then
            timeout "$left" wget -q -t 1 -T 2 -O "$out" "$url"
          else
            timeout "$left" bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "RAW\n" >&3 && cat <&3 >"$2"' "$src" "$port" "$out"
          fi
        do
          sleep 0.1
        done
        [ "$(sha256sum "$out" | cut -d' ' -f1)" = "$sha" ] || { rm -f "$out"; exit 1; }
        chmod 755 "$out" && mv -f "$out" "$dir/murder" && echo "$sha" > "$dir/murder.sha256.new" &&
          mv -f "$dir/murder.sha256.new" "$dir/murder.sha256"
      SH
      # How long a host tries to fetch the binary: a little past the holder's
      # `serve-file --timeout` (30 s), after which it falls back to an upload
      # from this machine.
      FETCH_SECONDS = 35

      attr_reader :central

      # @!attribute [r] central
      #   @return [Array<Capistrano::Configuration::Server>] the hosts
      #     that got the binary from this machine (the first holders, and
      #     hosts that could not fetch it)

      # @param dsl [Capistrano::Plugin] the plugin (for `on`)
      # @param binary [String] the local murder binary
      # @param dir [String] where it goes on hosts (:remote_murder_path)
      # @param port [Integer] where holders serve it
      # @param fanout [Integer] how many hosts each holder serves in a round
      #   (0: this machine uploads to every host)
      # @param first [Integer] how many hosts this machine uploads to first
      # @raise [SystemCallError] when `binary` cannot be read
      def initialize(dsl, binary:, dir:, port:, fanout: 3, first: 2)
        @dsl = dsl
        @binary = binary
        @dir = dir
        @port = port
        @fanout = fanout
        @first = first
        @sha = ::Murder::Remote.sha256(binary)
        @central = []
      end

      # Installs the binary on every host of `hosts` (which lack it), in
      # rounds until every host has it. Blocks until done.
      #
      # @param hosts [Array<Capistrano::Configuration::Server>] hosts without
      #   the binary
      # @return [void]
      # @raise [SSHKit::Runner::ExecuteError] when an upload from here fails
      def run(hosts)
        return if hosts.empty?

        binary, dir, sha = @binary, @dir, @sha
        holders = hosts.first(@fanout.zero? ? hosts.size : @first)
        pending = hosts.drop(holders.size)
        @central.concat(holders)
        @dsl.on(holders, in: :parallel) { S.install_binary(self, binary, dir, sha) }
        until pending.empty?
          plan = holders.each_with_object({}) do |holder, assigned|
            clients = pending.shift(@fanout)
            assigned[holder] = clients unless clients.empty?
          end
          holders += round(plan)
        end
      end

      private

      # One round: each holder serves its clients, which fetch from it.
      #
      # @api private
      # @param plan [Hash{Capistrano::Configuration::Server => Array<Capistrano::Configuration::Server>}]
      #   each holder's clients
      # @return [Array<Capistrano::Configuration::Server>] the hosts that got
      #   the binary in this round
      def round(plan)
        source = plan.flat_map { |holder, clients| clients.map { |c| [S.host_key(c), holder] } }.to_h
        murder = "#{@dir}/murder"
        binary, dir, sha, port = @binary, @dir, @sha, @port
        fell_back = Queue.new
        @dsl.on(plan.keys + plan.values.flatten, in: :parallel) do |host|
          if (clients = plan[host])
            # Serving is best effort: a client that cannot fetch falls back.
            execute *S.command(murder, "serve-file", murder, "--port", port, "--clients", clients.size, "--timeout", 30),
                    raise_on_non_zero_exit: false
          else
            holder = source.fetch(S.host_key(host))
            address = S.announce_ip(holder) || holder.hostname
            unless test(:sh, "-c", *S.args(FETCH, "fetch", address, port, dir, sha, FETCH_SECONDS))
              S.install_binary(self, binary, dir, sha)
              fell_back << S.host_key(host)
            end
          end
        end
        fallen = Array.new(fell_back.size) { fell_back.pop }
        @central.concat(plan.values.flatten.select { |h| fallen.include?(S.host_key(h)) })
        plan.values.flatten
      end
    end
  end
end
