# frozen_string_literal: true

require_relative "error"

module Murder
  # The `murder` command that every host runs: the first of these that is
  # an executable file: `$MURDER_BINARY`; `murder/bin/murder` below a
  # directory of `$LOAD_PATH`, in its order (where the installed gem puts
  # the binary it built, beside its extension); in a checkout,
  # `target/release/murder` (`rake cli`). Needs no native extension:
  # `require "murder/binary"` is enough.
  #
  # @example
  #   Murder.binary # => ".../murder/bin/murder"
  #
  # @return [String] the path of an executable `murder`
  # @raise [Murder::Error] when none of these is an executable file
  def self.binary
    candidates = [ENV.fetch("MURDER_BINARY", nil)]
    candidates += $LOAD_PATH.map { |dir| File.join(dir, "murder", "bin", "murder") }
    candidates << File.expand_path("../../target/release/murder", __dir__)
    found = candidates.compact.find { |path| File.file?(path) && File.executable?(path) }
    found or raise Error, "no murder binary: reinstall the gem (it builds one), build it in a checkout " \
                          "(rake cli), or set MURDER_BINARY"
  end
end

module Murder
  module Binary
    # What a binary is built for, read from its header, as `uname -sm`
    # names hosts: `os` ("Linux", "Darwin", "FreeBSD") and the machine
    # names `uname -m` gives for its CPU.
    Platform = Struct.new(:os, :machines) do
      # @return [String] e.g. "Linux x86_64"
      def to_s = "#{os} #{machines.first}"

      # @param uname [String] a host's `uname -sm`, e.g. "Linux aarch64"
      # @return [Boolean] whether it runs this binary (true when `uname`
      #   said nothing: nothing to tell by)
      def runs_on?(uname)
        os_name, machine = uname.to_s.split
        return true if machine.nil?

        os_name == os && machines.include?(machine)
      end
    end

    # ELF e_machine => what `uname -m` says on such a CPU (ppc64 by
    # byte order, below).
    ELF_MACHINES = {
      3 => %w[i686 i386 i486 i586], 40 => %w[armv7l armv6l armv8l], 62 => %w[x86_64 amd64],
      183 => %w[aarch64 arm64], 243 => %w[riscv64], 22 => %w[s390x]
    }.freeze
    # ELF EI_OSABI => the kernel (0, System V, is what Linux binaries say).
    ELF_OSES = { 0 => "Linux", 3 => "Linux", 9 => "FreeBSD" }.freeze
    # Mach-O cputype => `uname -m` on macOS.
    MACH_O_CPUS = { 0x01000007 => %w[x86_64], 0x0100000c => %w[arm64] }.freeze

    module_function

    # The platform the binary at `path` is built for, from its ELF or
    # Mach-O header.
    #
    # @example
    #   Murder::Binary.platform(Murder.binary).to_s # => "Linux x86_64"
    #
    # @param path [String]
    # @return [Platform, nil] nil for another format (a script, say) or an
    #   unknown CPU: nothing to check by
    # @raise [SystemCallError] when it cannot be read
    def platform(path)
      head = File.binread(path, 64) || ""
      if head.start_with?("\x7FELF".b) && head.bytesize >= 20
        little = head.getbyte(5) == 1
        machine = head.byteslice(18, 2).unpack1(little ? "v" : "n")
        machines = machine == 21 ? [little ? "ppc64le" : "ppc64"] : ELF_MACHINES[machine]
        os = ELF_OSES[head.getbyte(7)]
        machines && os && Platform.new(os, machines)
      elsif head.byteslice(0, 4) == "\xCF\xFA\xED\xFE".b && head.bytesize >= 8
        machines = MACH_O_CPUS[head.byteslice(4, 4).unpack1("V")]
        machines && Platform.new("Darwin", machines)
      end
    end

    # Why the binary at `path` cannot run on these hosts, or nil when every
    # one of them runs it (or its platform is not known).
    #
    # @example
    #   Murder::Binary.mismatch("/build/murder", { "web1" => "Linux x86_64" })
    #   # => "the murder binary /build/murder is built for Linux aarch64, and web1 is Linux x86_64: ..."
    #
    # @param path [String] the binary
    # @param hosts [Hash{String => String}] each host's name => its `uname -sm`
    # @param setting [String] what the user sets to pick another binary
    # @return [String, nil]
    # @raise [SystemCallError] when the binary cannot be read
    def mismatch(path, hosts, setting: ":murder_binary (or MURDER_BINARY)")
      platform = platform(path) or return nil
      wrong = hosts.reject { |_, uname| platform.runs_on?(uname) }
      return nil if wrong.empty?

      kinds = wrong.group_by { |_, uname| uname.strip }.map do |uname, named|
        "#{named.map(&:first).join(', ')} #{named.size == 1 ? 'is' : 'are'} #{uname}"
      end
      "the murder binary #{path} is built for #{platform}, and #{kinds.join('; ')}: set #{setting} " \
        "to a murder built for them (`cargo build --release -p murder-cli` on such a machine)"
    end
  end
end
