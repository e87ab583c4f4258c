//! The status page a person reads at `GET /`.

use std::fmt::Write;

use super::swarm::Stats;
use super::TrackerConfig;

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(stats: &Stats, config: &TrackerConfig) -> String {
    let mut html = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>murder tracker</title><style>body{font-family:sans-serif;margin:2em}\
         table{border-collapse:collapse;margin-bottom:1.5em}td,th{padding:.2em .8em;text-align:left;\
         border-bottom:1px solid #ddd}</style></head><body>\n<h1>murder tracker</h1>\n",
    );
    let _ = writeln!(
        html,
        "<p>{} torrents allowed; peers re-announce every {} s. Machine-readable: <a href=\"/stats.json\">/stats.json</a></p>",
        stats.torrents.len(),
        config.interval.as_secs()
    );
    for t in &stats.torrents {
        let _ = writeln!(
            html,
            "<h2>{}</h2>\n<p><code>{}</code> — {} seeds, {} downloaders, {} completed, {} bytes left in the swarm</p>",
            escape(&t.name),
            t.info_hash,
            t.seeds,
            t.downloaders,
            t.completed,
            t.bytes_left
        );
        if t.peers.is_empty() {
            html.push_str("<p>no peers</p>\n");
            continue;
        }
        html.push_str("<table><tr><th>peer</th><th>done</th><th>left</th><th>uploaded</th><th>downloaded</th><th>last announce</th></tr>\n");
        for p in &t.peers {
            let done = p
                .percent_done
                .map_or_else(|| "?".to_string(), |d| format!("{d:.1}%"));
            let _ = writeln!(
                html,
                "<tr><td>{}:{}</td><td>{done}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0} s ago</td></tr>",
                escape(&p.ip),
                p.port,
                p.left,
                p.uploaded,
                p.downloaded,
                p.seconds_since_announce
            );
        }
        html.push_str("</table>\n");
    }
    html.push_str("</body></html>\n");
    html
}
