//! The dashboard a person watches at `GET /`: each torrent with a progress
//! bar per host, its rate and what is left, the swarm's rate and ETA, and a
//! chart of hosts done over time. One static page that polls
//! `/stats.json` every second and redraws in place (no full-page refresh);
//! without JavaScript it points at `/stats.json`.

use super::TrackerConfig;

const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>murder tracker</title>
<style>
  :root { --fg:#1d2430; --muted:#6b7585; --bar:#e6e9ef; --done:#2f9e6e; --go:#3b7dd8; --seed:#8a63d2; }
  body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); margin: 24px 32px; background: #fafbfc; }
  h1 { font-size: 20px; margin: 0 0 4px; } h1 span { color: var(--muted); font-weight: 400; font-size: 14px; }
  .torrent { background: #fff; border: 1px solid #e3e6eb; border-radius: 8px; padding: 16px 20px; margin: 16px 0; }
  .torrent h2 { font-size: 16px; margin: 0; } .meta { color: var(--muted); margin: 2px 0 12px; }
  .summary { display: flex; gap: 28px; margin: 8px 0 14px; } .summary b { display: block; font-size: 18px; }
  .summary span { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
  .hosts { display: grid; grid-template-columns: 150px 1fr 90px 110px; gap: 4px 12px; align-items: center; }
  .host .name { font-family: ui-monospace, monospace; font-size: 12px; }
  .bar { background: var(--bar); border-radius: 4px; height: 12px; overflow: hidden; }
  .bar i { display: block; height: 100%; background: var(--go); transition: width .8s; }
  .host.done .bar i { background: var(--done); } .host.seed .bar i { background: var(--seed); }
  .num { text-align: right; font-variant-numeric: tabular-nums; color: var(--muted); font-size: 12px; }
  svg.chart { width: 100%; max-width: 520px; height: 110px; display: block; margin-top: 14px; }
  svg.chart text { font-size: 10px; fill: var(--muted); }
  .empty { color: var(--muted); }
</style></head>
<body>
<h1>murder tracker <span id="info"></span></h1>
<noscript><p>This page needs JavaScript; the same data is at <a href="/stats.json">/stats.json</a>.</p></noscript>
<div id="torrents"><p class="empty">loading&hellip;</p></div>
<script>
"use strict";
const INTERVAL = __INTERVAL__;
const units = ["B", "KiB", "MiB", "GiB", "TiB"];
function human(n) { let u = 0; while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; } return (u ? n.toFixed(1) : Math.round(n)) + " " + units[u]; }
function seconds(s) { if (!isFinite(s)) return "?"; s = Math.round(s); return s >= 60 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s"; }
function el(tag, attrs, text) { const e = document.createElement(tag); for (const k in attrs || {}) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = text; return e; }
function chart(t) {
  const w = 520, h = 110, pad = 24, n = t.peers.length || 1, end = Math.max(t.seconds, 1);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart"); svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const x = s => pad + (w - 2 * pad) * s / end, y = k => h - pad - (h - 2 * pad) * k / Math.max(n, t.completed_at.length);
  let d = `M${x(0)},${y(0)}`; t.completed_at.forEach((s, i) => { d += ` L${x(s)},${y(i)} L${x(s)},${y(i + 1)}`; }); d += ` L${x(end)},${y(t.completed_at.length)}`;
  const add = (tag, a, text) => { const e = document.createElementNS(svg.namespaceURI, tag); for (const k in a) e.setAttribute(k, a[k]); if (text) e.textContent = text; svg.appendChild(e); };
  add("line", { x1: pad, y1: h - pad, x2: w - pad, y2: h - pad, stroke: "#ccd" });
  add("path", { d, fill: "none", stroke: "#2f9e6e", "stroke-width": 2 });
  add("text", { x: pad, y: 12 }, "hosts done over time");
  add("text", { x: w - pad, y: h - 8, "text-anchor": "end" }, seconds(end));
  add("text", { x: pad - 4, y: y(Math.max(n, t.completed_at.length)) + 3, "text-anchor": "end" }, String(Math.max(n, t.completed_at.length)));
  return svg;
}
function render(stats) {
  const root = document.getElementById("torrents");
  document.getElementById("info").textContent = `${stats.torrents.length} torrents, peers announce every ${INTERVAL} s`;
  root.replaceChildren();
  if (!stats.torrents.length) root.appendChild(el("p", { class: "empty" }, "no torrents allowed yet"));
  for (const t of stats.torrents) {
    const box = el("section", { class: "torrent", "data-info-hash": t.info_hash });
    box.appendChild(el("h2", {}, t.name));
    box.appendChild(el("div", { class: "meta" }, `${t.info_hash} \u00b7 ${human(t.data_length || 0)}`));
    let rate = 0;
    // The tracker measures each host's rate between its announces.
    const rows = t.peers.map(p => { rate += p.rate; return { p, r: p.rate }; });
    const left = t.bytes_left;
    const summary = el("div", { class: "summary" });
    const stat = (v, label) => { const d = el("div"); d.appendChild(el("b", {}, v)); d.appendChild(el("span", {}, label)); summary.appendChild(d); };
    stat(`${t.seeds} / ${t.peers.length}`, "hosts done");
    stat(human(left), "left in the swarm");
    stat(human(rate) + "/s", "swarm rate");
    stat(left === 0 ? "done" : seconds(rate > 0 ? left / rate : Infinity), "eta");
    box.appendChild(summary);
    const grid = el("div", { class: "hosts" });
    for (const { p, r } of rows) {
      const pct = p.percent_done === null ? 0 : p.percent_done, done = p.left === 0;
      const row = el("div", { class: "host" + (done ? " done" : ""), style: "display:contents" });
      row.appendChild(el("div", { class: "name" }, `${p.ip}:${p.port}`));
      const bar = el("div", { class: "bar", title: `${pct}%` }); const fill = el("i", { style: `width:${pct}%` }); bar.appendChild(fill); row.appendChild(bar);
      row.appendChild(el("div", { class: "num" }, done ? "done" : `${pct.toFixed(1)}%`));
      row.appendChild(el("div", { class: "num" }, done ? human(t.data_length || 0) : human(r) + "/s"));
      grid.appendChild(row);
    }
    if (!rows.length) grid.appendChild(el("p", { class: "empty" }, "no peers"));
    box.appendChild(grid);
    box.appendChild(chart(t));
    root.appendChild(box);
  }
}
async function poll() {
  try { const r = await fetch("/stats.json" + location.search, { cache: "no-store" }); if (r.ok) render(await r.json()); } catch (e) {}
  setTimeout(poll, 1000);
}
poll();
</script>
</body></html>
"##;

/// The dashboard, for a tracker with `config`.
pub fn render(config: &TrackerConfig) -> String {
    PAGE.replace("__INTERVAL__", &config.interval.as_secs().to_string())
}
