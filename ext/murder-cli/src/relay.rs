//! `murder relay --forward PORT=ADDRESS:PORT ...`: passes each connection
//! to PORT (every address of this host) on to ADDRESS:PORT, until stopped.
//! A deploy whose servers cannot connect to the deploying machine runs one
//! on a server, over SSH, in front of remote forwards to the deployer's
//! tracker and seed (see murder_core::relay).

use std::io::Read;

use murder_core::relay::{Forward, Relay};

use crate::{print_line, signals};

#[derive(clap::Args)]
pub struct Args {
    /// A port relayed (repeatable): connections to PORT on every address of
    /// this host go on to ADDRESS:PORT, e.g. 8998=127.0.0.1:40001.
    #[arg(long = "forward", value_name = "PORT=ADDRESS:PORT", required = true)]
    forwards: Vec<Forward>,
    /// Run only while standard input stays open (a deploy's SSH channel):
    /// its end stops the relay, as SIGTERM, SIGINT and SIGHUP do.
    #[arg(long)]
    while_stdin_open: bool,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let relay = Relay::bind(&args.forwards)?;
    let ports: Vec<String> = relay
        .forwards()
        .iter()
        .map(|f| format!("{} -> {}", f.listen, f.to))
        .collect();
    // The deployer waits for this line before it lets servers connect.
    print_line(&format!("murder relay: ready: {}", ports.join(", ")));
    let (closed, on_close) = tokio::sync::oneshot::channel::<()>();
    if args.while_stdin_open {
        std::thread::spawn(move || {
            let mut sink = [0u8; 512];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            let _ = closed.send(());
        });
    }
    let stdin_closed = async move {
        if args.while_stdin_open {
            let _ = on_close.await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(relay.run(async {
        tokio::select! {
            _ = signals::terminated() => {}
            _ = stdin_closed => {}
        }
    }))?;
    Ok(())
}
