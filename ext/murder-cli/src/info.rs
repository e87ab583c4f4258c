//! `murder info TORRENT [--json]`

use std::path::PathBuf;

use murder_core::Metainfo;
use serde_json::json;

use murder_core::units::human_bytes;

#[derive(clap::Args)]
pub struct Args {
    /// The .torrent file.
    torrent: PathBuf,
    /// Print one JSON object (for programs).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let t = Metainfo::load(&args.torrent)?;
    if args.json {
        let files: Vec<_> = t
            .files
            .iter()
            .filter(|f| !f.pad)
            .map(|f| {
                let mut entry = json!({ "path": f.path, "length": f.length });
                if f.executable {
                    entry["executable"] = json!(true);
                }
                if let Some(target) = &f.symlink {
                    entry["symlink"] = json!(target);
                }
                entry
            })
            .collect();
        let doc = json!({
            "info_hash": t.info_hash_hex(),
            "name": t.name,
            "total_length": t.total_length(),
            "data_length": t.data_length(),
            "piece_length": t.piece_length,
            "piece_count": t.piece_count(),
            "private": t.private,
            "single_file": t.single_file,
            "announce": t.announce,
            "announce_list": t.announce_list,
            "created_by": t.created_by,
            "creation_date": t.creation_date,
            "comment": t.comment,
            "files": files,
            "empty_dirs": t.empty_dirs,
        });
        println!("{doc}");
        return Ok(());
    }
    println!("name       {}", t.name);
    println!("info-hash  {}", t.info_hash_hex());
    println!("announce   {}", t.announce.as_deref().unwrap_or("(none)"));
    let trackers = t.trackers();
    if trackers.len() > 1 {
        println!("trackers   {}", trackers.join(" "));
    }
    println!(
        "size       {} ({} bytes){}",
        human_bytes(t.data_length()),
        t.data_length(),
        padding(&t)
    );
    println!(
        "pieces     {} of {}",
        t.piece_count(),
        human_bytes(t.piece_length)
    );
    println!("private    {}", if t.private { "yes" } else { "no" });
    if let Some(by) = &t.created_by {
        println!("made by    {by}");
    }
    let real: Vec<_> = t.files.iter().filter(|f| !f.pad).collect();
    println!("files      {}", real.len());
    for f in real.iter().take(20) {
        let how = match (&f.symlink, f.executable) {
            (Some(target), _) => format!(" -> {}", target.join("/")),
            (None, true) => " (executable)".into(),
            _ => String::new(),
        };
        println!("  {:>10}  {}{how}", f.length, f.path.join("/"));
    }
    if real.len() > 20 {
        println!("  … and {} more (--json lists all)", real.len() - 20);
    }
    if !t.empty_dirs.is_empty() {
        println!("empty dirs {}", t.empty_dirs.len());
        for d in t.empty_dirs.iter().take(20) {
            println!("  {}/", d.join("/"));
        }
        if t.empty_dirs.len() > 20 {
            println!(
                "  … and {} more (--json lists all)",
                t.empty_dirs.len() - 20
            );
        }
    }
    Ok(())
}

/// What pad files add to the pieces, when there are any.
pub fn padding(t: &Metainfo) -> String {
    match t.total_length() - t.data_length() {
        0 => String::new(),
        pads => format!(", {} more in pad files", human_bytes(pads)),
    }
}
