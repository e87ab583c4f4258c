//! Listening sockets for the tracker, peers and `serve-file`.
//!
//! "Every address" is `::` on one dual-stack socket, so that a fleet
//! addressed by IPv6 reaches the same port as one addressed by IPv4
//! (IPv4 clients arrive as `::ffff:a.b.c.d`). The socket says so itself
//! (IPV6_V6ONLY off) rather than trusting the host's `bindv6only`. A host
//! without IPv6 gets `0.0.0.0` instead. Any other address, `0.0.0.0`
//! included, is bound as given.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

use crate::error::{Error, Result};

/// The address that means every address of this host, IPv6 and IPv4.
pub const EVERY_ADDRESS: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// Connections the kernel queues before they are accepted.
const BACKLOG: i32 = 1024;

/// Binds and listens on `addr` (non-blocking, SO_REUSEADDR as std does).
/// `::` listens on IPv6 and IPv4 alike, or on IPv4 alone where the host has
/// no IPv6. Errors name the address.
pub fn tcp(addr: SocketAddr) -> Result<TcpListener> {
    bind(addr).map_err(|e| Error::io(addr.to_string(), e))
}

/// [`tcp`], for callers that name the error themselves.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    if addr.ip() != EVERY_ADDRESS {
        return plain(addr);
    }
    match dual_stack(addr.port()) {
        Err(e) if no_ipv6(&e) => plain(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port())),
        other => other,
    }
}

fn dual_stack(port: u16) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV6, Type::STREAM, None)?;
    socket.set_only_v6(false)?;
    finish(socket, SocketAddr::new(EVERY_ADDRESS, port))
}

fn plain(addr: SocketAddr) -> io::Result<TcpListener> {
    finish(
        Socket::new(Domain::for_address(addr), Type::STREAM, None)?,
        addr,
    )
}

fn finish(socket: Socket, addr: SocketAddr) -> io::Result<TcpListener> {
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The errors of a host whose kernel has IPv6 off or compiled out.
fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    // Rule: "every address" answers on IPv4 and on IPv6 alike.
    #[test]
    fn every_address_answers_on_ipv4_and_ipv6() {
        let listener = tcp(SocketAddr::new(EVERY_ADDRESS, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("IPv4 client");
        if ipv6_loopback() {
            TcpStream::connect((Ipv6Addr::LOCALHOST, port)).expect("IPv6 client");
        }
    }

    #[test]
    fn an_explicit_ipv4_address_stays_ipv4() {
        let listener = tcp(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)).unwrap();
        assert!(listener.local_addr().unwrap().is_ipv4());
    }

    #[test]
    fn a_taken_port_is_an_error_naming_the_address() {
        let first = tcp(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)).unwrap();
        let taken = first.local_addr().unwrap();
        let err = tcp(taken).unwrap_err().to_string();
        assert!(err.contains(&taken.to_string()), "{err}");
    }

    fn ipv6_loopback() -> bool {
        std::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
    }
}
