//! HTTP/1.1 framing for the tracker, with no I/O in it: request heads are
//! parsed by httparse, a response is written into one buffer so that it
//! leaves in one `send`. The tracker serves small GETs; anything else
//! (bodies, upgrades, chunked uploads) is answered and the connection closed.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Most headers a request may carry; real announces send fewer than ten.
const MAX_HEADERS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Status(pub u16, pub &'static str);

impl Status {
    pub const OK: Status = Status(200, "OK");
    pub const BAD_REQUEST: Status = Status(400, "Bad Request");
    pub const NOT_FOUND: Status = Status(404, "Not Found");
    pub const METHOD_NOT_ALLOWED: Status = Status(405, "Method Not Allowed");
    pub const HEADERS_TOO_LARGE: Status = Status(431, "Request Header Fields Too Large");
    pub const INTERNAL: Status = Status(500, "Internal Server Error");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Head,
    Other,
}

/// One parsed request head, borrowing the connection's buffer.
#[derive(Debug)]
pub(super) struct Head<'a> {
    pub method: Method,
    /// The path of the target (origin form; an absolute-form target has
    /// its scheme and authority taken off), without the query.
    pub path: &'a str,
    /// What follows `?`, still percent-encoded.
    pub query: &'a [u8],
    /// Length of the request target as sent.
    pub target_len: usize,
    /// The client is HTTP/1.0 (keep-alive only when it asks).
    pub http10: bool,
    /// The client wants the connection kept after this reply.
    pub keep_alive: bool,
    /// The request has a body, which the tracker does not read: the
    /// connection is closed after the reply.
    pub has_body: bool,
    /// Bytes of the buffer this head takes.
    pub len: usize,
}

#[derive(Debug)]
pub(super) enum Parse<'a> {
    Complete(Head<'a>),
    /// More bytes are needed.
    Partial,
    /// Not HTTP, or not something this server will serve.
    Invalid(Status),
}

pub(super) fn parse(buf: &[u8]) -> Parse<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parse::Invalid(Status::HEADERS_TOO_LARGE),
        Err(_) => return Parse::Invalid(Status::BAD_REQUEST),
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Parse::Invalid(Status::BAD_REQUEST);
    };
    let http10 = version == 0;
    let mut keep_alive = !http10;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match (parsed, content_length) {
                (None, _) => return Parse::Invalid(Status::BAD_REQUEST),
                (Some(n), Some(seen)) if n != seen => return Parse::Invalid(Status::BAD_REQUEST),
                (Some(n), _) => content_length = Some(n),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        }
    }
    if chunked && content_length.is_some() {
        // Ambiguous framing (RFC 9112 §6.1): refuse rather than guess.
        return Parse::Invalid(Status::BAD_REQUEST);
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    let origin = origin_form(target);
    let (path, query) = match origin.split_once('?') {
        Some((path, query)) => (path, query.as_bytes()),
        None => (origin, &b""[..]),
    };
    let path = if path.is_empty() { "/" } else { path };
    Parse::Complete(Head {
        method,
        path,
        query,
        target_len: target.len(),
        http10,
        keep_alive,
        has_body: chunked || content_length.is_some_and(|n| n > 0),
        len,
    })
}

/// `http://host:port/announce?…` → `/announce?…` (RFC 9112 §3.2.2: a
/// server must accept the absolute form).
fn origin_form(target: &str) -> &str {
    // Bytes, not a `str` slice: the target may hold multi-byte UTF-8
    // where the prefix would end.
    let lower_starts = |prefix: &str| {
        target
            .as_bytes()
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
    };
    let rest = if lower_starts("http://") {
        &target["http://".len()..]
    } else if lower_starts("https://") {
        &target["https://".len()..]
    } else {
        return target;
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
        // `http://host?query`: the split leaves an empty path, read as `/`.
        Some(i) => &rest[i..],
        None => "/",
    }
}

/// What a route answers.
pub(super) struct Reply {
    pub status: Status,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// The whole response in one buffer. `head_only` answers HEAD; `close`
/// says the connection ends after it.
pub(super) fn encode(reply: &Reply, head_only: bool, close: bool, http10: bool) -> Vec<u8> {
    let body: &[u8] = if head_only { b"" } else { &reply.body };
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(reply.status.0).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reply.status.1.as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: ");
    out.extend_from_slice(reply.content_type.as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(reply.body.len()).as_bytes());
    if reply.status == Status::METHOD_NOT_ALLOWED {
        out.extend_from_slice(b"\r\nallow: GET, HEAD");
    }
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    } else if http10 {
        out.extend_from_slice(b"\r\nconnection: keep-alive");
    }
    out.extend_from_slice(b"\r\ndate: ");
    with_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// A reply to a request that could not be read; the connection closes.
pub(super) fn error(status: Status) -> Vec<u8> {
    let reply = Reply {
        status,
        content_type: "text/plain; charset=utf-8",
        body: format!("{}\n", status.1.to_ascii_lowercase()).into_bytes(),
    };
    encode(&reply, false, true, false)
}

thread_local! {
    /// The `Date` header, formatted once per second (RFC 9110 §6.6.1
    /// asks an origin server with a clock to send it).
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now).into_bytes());
        }
        f(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8]) -> Head<'_> {
        match parse(raw) {
            Parse::Complete(head) => head,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn splits_path_and_query_and_keeps_http11_alive() {
        let head = complete(b"GET /announce?info_hash=%01&port=1 HTTP/1.1\r\nHost: t\r\n\r\nGET");
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.path, "/announce");
        assert_eq!(head.query, b"info_hash=%01&port=1");
        assert!(head.keep_alive && !head.http10 && !head.has_body);
        assert_eq!(
            head.len,
            b"GET /announce?info_hash=%01&port=1 HTTP/1.1\r\nHost: t\r\n\r\n".len()
        );
    }

    #[test]
    fn http10_keeps_alive_only_when_asked() {
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!complete(b"GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").keep_alive);
    }

    #[test]
    fn absolute_form_targets_are_served_as_origin_form() {
        let head = complete(b"GET http://tracker:8998/announce?a=1 HTTP/1.1\r\n\r\n");
        assert_eq!((head.path, head.query), ("/announce", &b"a=1"[..]));
        assert_eq!(complete(b"GET HTTP://t HTTP/1.1\r\n\r\n").path, "/");
    }

    #[test]
    fn bodies_and_ambiguous_framing() {
        assert!(complete(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").has_body);
        assert!(!complete(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").has_body);
        for raw in [
            &b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"\x16\x03\x01\x00 TLS hello",
            b"GET /announce?\xff\x00 HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw), Parse::Invalid(Status::BAD_REQUEST)),
                "{raw:?}"
            );
        }
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: t\r\n"),
            Parse::Partial
        ));
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            raw.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(&raw),
            Parse::Invalid(Status::HEADERS_TOO_LARGE)
        ));
    }

    #[test]
    fn encodes_one_response_with_length_and_date() {
        let reply = Reply {
            status: Status::OK,
            content_type: "text/plain",
            body: b"d8:intervali15ee".to_vec(),
        };
        let text = String::from_utf8(encode(&reply, false, false, false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\ncontent-length: 16\r\n"), "{text}");
        assert!(text.contains("GMT\r\n\r\nd8:interval"), "{text}");
        assert!(!text.contains("connection:"), "{text}");
        let head = String::from_utf8(encode(&reply, true, true, false)).unwrap();
        assert!(head.ends_with("\r\n\r\n") && head.contains("content-length: 16"));
        assert!(head.contains("connection: close"));
    }
}
