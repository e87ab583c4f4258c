//! A relay: each TCP connection accepted on a port is passed on, byte for
//! byte, to another address. A deploy whose servers cannot connect to the
//! deploying machine (behind NAT, a CI runner) runs one on a server, in
//! front of SSH remote forwards to the deployer's tracker and seed: sshd
//! binds those on the server's loopback only (`GatewayPorts no`, the
//! default), so the other servers reach them through the relay. The relay
//! reads nothing it passes on: a closed swarm stays sealed end to end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Connections relayed at once, per port: a flood of them cannot take the
/// descriptors (a deploy needs a few per server).
const MAX_CONNECTIONS: usize = 512;
/// How long a connection to the target may take before the client's is
/// dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One port relayed: connections to `listen` go on to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub listen: SocketAddr,
    pub to: SocketAddr,
}

impl std::str::FromStr for Forward {
    type Err = Error;

    /// `PORT=ADDR:PORT`, e.g. `8998=127.0.0.1:40001` (every address of this
    /// host on port 8998, on to 127.0.0.1:40001).
    fn from_str(text: &str) -> Result<Forward> {
        let bad = || {
            Error::InvalidArgument(format!(
                "forward {text:?}: expected PORT=ADDRESS:PORT, e.g. 8998=127.0.0.1:40001"
            ))
        };
        let (port, to) = text.split_once('=').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let to: SocketAddr = to.parse().map_err(|_| bad())?;
        if to.port() == 0 {
            return Err(bad());
        }
        let listen = SocketAddr::new(crate::listen::EVERY_ADDRESS, port);
        Ok(Forward { listen, to })
    }
}

/// Bound ports, ready to relay.
pub struct Relay {
    ports: Vec<(std::net::TcpListener, Forward)>,
}

impl Relay {
    /// Binds every forward's port before anything is relayed, so that a
    /// taken port fails the whole relay at once, naming the address.
    pub fn bind(forwards: &[Forward]) -> Result<Relay> {
        if forwards.is_empty() {
            return Err(Error::InvalidArgument("a relay needs a forward".into()));
        }
        let ports = forwards
            .iter()
            .map(|f| crate::listen::tcp(f.listen).map(|l| (l, *f)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Relay { ports })
    }

    /// The forwards as bound (a port 0 given is the port picked).
    pub fn forwards(&self) -> Vec<Forward> {
        self.ports
            .iter()
            .map(|(l, f)| Forward {
                listen: l.local_addr().unwrap_or(f.listen),
                to: f.to,
            })
            .collect()
    }

    /// Relays until `shutdown` resolves; every connection it relays is
    /// closed by then (the one shutdown path every task joins).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for (listener, forward) in self.ports {
            let listener = TcpListener::from_std(listener)
                .map_err(|e| Error::io(forward.listen.to_string(), e))?;
            tasks.spawn(accept(listener, forward.to, cancel.clone()));
        }
        shutdown.await;
        cancel.cancel();
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// Accepts on one port until cancelled, each connection on a task of its
/// own; returns once they all ended.
async fn accept(listener: TcpListener, to: SocketAddr, cancel: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        // Reap the ended ones, so the set holds only live connections.
        while connections.try_join_next().is_some() {}
        let Ok((client, from)) = accepted else {
            // Out of descriptors, say: a pause, not a spin, until some end.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("relay: {MAX_CONNECTIONS} connections to {to} already; {from} dropped");
            continue;
        };
        let cancel = cancel.clone();
        connections.spawn(async move {
            let _slot = slot;
            tokio::select! {
                _ = cancel.cancelled() => {}
                result = pass_on(client, to) => {
                    if let Err(e) = result {
                        tracing::debug!("relay {from} -> {to}: {e}");
                    }
                }
            }
        });
    }
    connections.shutdown().await;
}

/// One connection, both ways, until either side closes it.
async fn pass_on(mut client: TcpStream, to: SocketAddr) -> std::io::Result<()> {
    let mut target = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = client.set_nodelay(true);
    let _ = target.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut client, &mut target).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that echoes every connection's bytes back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    fn local(port: u16, to: SocketAddr) -> Forward {
        Forward {
            listen: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            to,
        }
    }

    #[test]
    fn forwards_read_as_port_equals_address() {
        let f: Forward = "8998=127.0.0.1:40001".parse().unwrap();
        assert_eq!(f.listen.port(), 8998);
        assert_eq!(f.to, "127.0.0.1:40001".parse().unwrap());
        for bad in [
            "8998",
            "x=127.0.0.1:1",
            "8998=127.0.0.1",
            "8998=host:1",
            "8998=127.0.0.1:0",
            "70000=127.0.0.1:1",
        ] {
            let err = bad.parse::<Forward>().unwrap_err().to_string();
            assert!(err.contains("expected PORT=ADDRESS:PORT"), "{bad}: {err}");
        }
    }

    // Rule: every byte passes both ways, on concurrent connections, and
    // the relay's shutdown closes the connections it relays.
    #[tokio::test]
    async fn relays_both_ways_and_closes_every_connection_on_shutdown() {
        let echo = echo_server().await;
        let relay = Relay::bind(&[local(0, echo)]).unwrap();
        let port = relay.forwards()[0].listen.port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(relay.run(async {
            let _ = stopped.await;
        }));
        let mut clients = Vec::new();
        for n in 0..3u8 {
            let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .unwrap();
            let sent = vec![n; 300_000];
            c.write_all(&sent).await.unwrap();
            let mut got = vec![0; sent.len()];
            c.read_exact(&mut got).await.unwrap();
            assert_eq!(got, sent);
            clients.push(c);
        }
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("the relay ends")
            .unwrap()
            .unwrap();
        for mut c in clients {
            let mut rest = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
            assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
        }
        assert!(
            TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_err(),
            "no longer listening"
        );
    }

    // A target that refuses ends that client's connection, not the relay.
    #[tokio::test]
    async fn a_refused_target_closes_the_client_and_the_relay_goes_on() {
        let gone = {
            let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            l.local_addr().unwrap()
        };
        let echo = echo_server().await;
        let relay = Relay::bind(&[local(0, gone), local(0, echo)]).unwrap();
        let ports: Vec<u16> = relay.forwards().iter().map(|f| f.listen.port()).collect();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(relay.run(async {
            let _ = stopped.await;
        }));
        let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, ports[0]))
            .await
            .unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
        let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, ports[1]))
            .await
            .unwrap();
        c.write_all(b"still here").await.unwrap();
        let mut got = [0; 10];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"still here");
        stop.send(()).unwrap();
        running.await.unwrap().unwrap();
    }

    #[test]
    fn a_taken_port_fails_the_whole_relay_naming_it() {
        let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let err = Relay::bind(&[local(0, to), local(port, to)])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    }
}
