# frozen_string_literal: true

require "fileutils"
require "tmpdir"

# PNG charts of finish times against T* for the README, drawn by gnuplot
# (Debian's gnuplot-nox, installed when missing).
module Chart
  module_function

  COLORS = { "murder" => "#d62728", "libtorrent" => "#1f77b4", "aria2" => "#2ca02c", "http" => "#7f7f7f" }.freeze
  PALETTE = ["#fdae6b", "#e6550d", "#a63603", "#d62728", "#7f2704"].freeze
  # The swarm charts stop here so the BitTorrent clients stay readable; a
  # central server's line leaves the chart and its legend says where it ends.
  SWARM_YMAX = 4

  # One panel per fleet (hosts @ rate): each tool's finish time of every
  # downloader, fastest to slowest, in units of T*, from its median run.
  def swarm(results, png, title:)
    panels = results.group_by { |r| [r[:hosts], r[:rate]] }.map do |(hosts, rate), rs|
      series = rs.group_by { |r| r[:tool] }.to_h do |tool, runs|
        runs = runs.sort_by { |r| r[:finishes].max }
        median_run = runs[(runs.size - 1) / 2]
        ys = median_run[:finishes].sort.map { |f| f / median_run[:t_star] }
        name = ys.last > SWARM_YMAX ? format("%s (last %.1f T*)", tool, ys.last) : tool
        [name, ys.each_with_index.map { |y, i| [i + 1, y] }]
      end
      { title: "#{hosts} hosts, #{rate} Mbit/s", series: series }
    end
    plot(panels, png, title: title, xlabel: "downloaders, in the order they finished", ymax: SWARM_YMAX)
  end

  # panels: [{ title:, series: { name => [[x, y], ...] } }], y in units of T*.
  def plot(panels, png, title:, xlabel:, key: "top left", ymax: nil)
    ensure_gnuplot
    FileUtils.mkdir_p(File.dirname(png))
    Dir.mktmpdir("murder-chart") do |dir|
      script = +"set terminal pngcairo size #{[520 * panels.size, 520].max},440 font 'DejaVu Sans,10'\n"
      script << "set output '#{png}'\n"
      script << "set multiplot layout 1,#{panels.size} title '#{title}'\n"
      script << "set key #{key} box opaque\nset grid ytics\nset yrange [0:#{ymax || '*'}]\n"
      script << "set xlabel '#{xlabel}'\nset ylabel 'finish time / T*'\n"
      panels.each_with_index do |panel, p|
        plots = ["1.0 with lines dt 2 lc rgb 'black' title 'T*'",
                 "1.25 with lines dt 3 lc rgb '#d62728' title 'goal 1.25 T*'"]
        panel[:series].each_with_index do |(name, points), k|
          data = File.join(dir, "p#{p}-#{k}.dat")
          File.write(data, points.map { |x, y| "#{x} #{y}" }.join("\n") << "\n")
          color = COLORS.fetch(name.split.first) { PALETTE[k % PALETTE.size] }
          plots << "'#{data}' with linespoints pt 7 ps 0.5 lw 2 lc rgb '#{color}' title '#{name}'"
        end
        script << "set title '#{panel[:title]}'\n"
        script << "plot #{plots.join(', ')}\n"
      end
      script << "unset multiplot\n"
      File.write(File.join(dir, "chart.gp"), script)
      system("gnuplot", File.join(dir, "chart.gp"), exception: true)
    end
  end

  def ensure_gnuplot
    return if system("command -v gnuplot >/dev/null")

    system("apt-get install -y -qq gnuplot-nox >/dev/null", exception: true)
  end
end
