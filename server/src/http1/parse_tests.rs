//! Unit tests of `parse.rs`: the request-head parser and its refusals.

use super::*;

fn p(raw: &str) -> Result<Option<Head<'_>>, HeadError> {
    parse(raw.as_bytes(), &HeadLimits::default())
}

#[test]
fn empty_lines_before_the_request_line_are_ignored() {
    let raw = "\r\n\r\n\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(
        scan(raw.as_bytes(), &HeadLimits::default()),
        Ok(Some(raw.len()))
    );
    assert_eq!(p(raw).unwrap().unwrap().path, b"/a");
    assert!(matches!(p("\r\n\r\n"), Ok(None)));
    // The request line after them is held to its limit as it comes in.
    let limits = HeadLimits {
        request_line: 20,
        ..HeadLimits::default()
    };
    let long = format!("\r\n\r\nGET /{} HTTP/1.1", "x".repeat(30));
    assert_eq!(
        scan(long.as_bytes(), &limits),
        Err(HeadError::RequestLineTooLong(20))
    );
    // A bare LF is still refused, there as anywhere in the head.
    assert!(p("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n").is_err());
}

#[test]
fn heads_and_their_framing() {
    let h = p("GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(
        (h.path, h.query, h.minor, h.keep_alive),
        (&b"/a/b"[..], &b"x=1"[..], 1, true)
    );
    assert_eq!(h.body, BodyFraming::None);
    let h = p("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.body, BodyFraming::Length(12));
    // RFC 9112 §6.1: codings are case-insensitive; several fields are one list, in
    // which empty elements are ignored (RFC 9110 §5.6.1).
    for te in [
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: CHUNKED",
        "Transfer-Encoding: , chunked ,",
        "Transfer-Encoding:\r\nTransfer-Encoding: chunked",
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: h\r\n{te}\r\n\r\n");
        let h = p(&raw).expect(&raw).expect(&raw);
        assert_eq!(h.body, BodyFraming::Chunked, "{raw:?}");
    }
    let h = p("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
    assert!(!h.keep_alive);
    let h = p("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(h.keep_alive);
    assert!(p("GET / HTTP/1.1\r\nHost: h\r\n").unwrap().is_none());
}

/// The host the app will see: the value of the one Host field left in the head.
fn host<'h>(h: &'h Head<'_>) -> &'h [u8] {
    let hosts: Vec<_> = h
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"host"))
        .collect();
    assert_eq!(hosts.len(), 1, "exactly one Host reaches the app");
    hosts[0].1
}

#[test]
fn request_target_forms() {
    // (raw head, path, query, Host the app sees)
    let cases: &[(&str, &str, &str, &str)] = &[
        // RFC 9112 §3.2.1 origin-form.
        (
            "GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: h\r\n\r\n",
            "/a/b",
            "x=1&y=%20",
            "h",
        ),
        (
            "GET /?a=1?b=2/c HTTP/1.1\r\nHost: h\r\n\r\n",
            "/",
            "a=1?b=2/c",
            "h",
        ),
        ("GET /a? HTTP/1.1\r\nHost: h\r\n\r\n", "/a", "", "h"),
        (
            "GET //x/./../y;p=1 HTTP/1.1\r\nHost: h\r\n\r\n",
            "//x/./../y;p=1",
            "",
            "h",
        ),
        (
            "GET /{a}|\"b\" HTTP/1.1\r\nHost: h\r\n\r\n",
            "/{a}|\"b\"",
            "",
            "h",
        ),
        // RFC 9112 §3.2.2 absolute-form: the target's authority wins over Host.
        (
            "GET http://example.com/x?y HTTP/1.1\r\nHost: example.com\r\n\r\n",
            "/x",
            "y",
            "example.com",
        ),
        (
            "GET http://example.com/x HTTP/1.1\r\nHost: other.org\r\n\r\n",
            "/x",
            "",
            "example.com",
        ),
        (
            "GET http://a.test:8080/p?q HTTP/1.1\r\nX: 1\r\nHost: b.test:9\r\n\r\n",
            "/p",
            "q",
            "a.test:8080",
        ),
        (
            "GET HTTPS://A.Test HTTP/1.1\r\nHost: \r\n\r\n",
            "/",
            "",
            "A.Test",
        ),
        (
            "GET http://[::1]:80?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            "/",
            "q=1",
            "[::1]:80",
        ),
        ("GET http://h/a%2Fb HTTP/1.0\r\n\r\n", "/a%2Fb", "", "h"),
        // RFC 9112 §3.2.4 asterisk-form.
        ("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", "*", "", "h"),
        // RFC 9110 §7.2: Host may be empty, an IPv6 literal, or carry a port.
        ("GET / HTTP/1.1\r\nHost:\r\n\r\n", "/", "", ""),
        (
            "GET / HTTP/1.1\r\nHost: [fe80::1]:8000\r\n\r\n",
            "/",
            "",
            "[fe80::1]:8000",
        ),
        (
            "GET / HTTP/1.1\r\nHost: my_host.local:\r\n\r\n",
            "/",
            "",
            "my_host.local:",
        ),
    ];
    for (raw, path, query, host_seen) in cases {
        let h = p(raw).expect(raw).expect(raw);
        assert_eq!(
            (h.path, h.query, host(&h)),
            (path.as_bytes(), query.as_bytes(), host_seen.as_bytes()),
            "{raw:?}"
        );
    }
}

#[test]
fn refusals_and_their_status() {
    let cases: &[(&str, u16)] = &[
        ("GET / HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
        // RFC 9112 §6.3 (4), §6.1, §7: framing that cannot be trusted.
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,\r\n\r\n", 400),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
        // RFC 9112 §6.1: sound framing, but a coding we do not implement.
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        ("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        ("GET / HTTP/3.0\r\nHost: h\r\n\r\n", 505),
        // RFC 9112 §3: an invalid request-line is 400, whatever its last word says
        // (HTTP Garden payloads; 505 is only for a well-formed line).
        ("GE T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET /  HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400),
        ("GET /  HTTP/2.0\r\nHost: h\r\n\r\n", 400),
        ("GET / FOO\r\nHost: h\r\n\r\n", 400),
        ("G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 400),
        // RFC 9112 §2.2, §5.5: a bare LF ends no line and may not sit in a value.
        ("GET / HTTP/1.1\r\nHost: h\r\nX: a\nY: b\r\n\r\n", 400),
        ("GET / HTTP/1.1\nHost: h\n\n", 400),
        // RFC 9112 §3.2: request-targets in no valid form.
        ("GET /x#frag HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET /caf\u{e9} HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET x/y HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET http:/x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET http://u:p@h/x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET http://h:8x/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET http://h%zz/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        // RFC 9112 §3.2.2: the Host field is still required (and checked) in 1.1.
        ("GET http://h/x HTTP/1.1\r\n\r\n", 400),
        ("GET http://h/x HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
        // RFC 9112 §3.2: invalid Host values.
        ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: u@h\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h:80:80\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
        // RFC 9110 §9.3.6: no tunnels.
        ("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501),
    ];
    for (raw, status) in cases {
        let err = p(raw).expect_err(raw);
        assert_eq!(err.status(), *status, "{raw:?} gave {err:?}");
    }
    let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
    assert_eq!(p(&long).unwrap_err().status(), 414);
    // The limit is the line without its CRLF: 8190 bytes pass, 8191 do not.
    let line = |n: usize| format!("GET /{} HTTP/1.1", "a".repeat(n - 14));
    let at = format!("{}\r\nHost: h\r\n\r\n", line(8190));
    assert!(p(&at).is_ok(), "a request line of exactly the limit");
    let past = format!("{}\r\nHost: h\r\n\r\n", line(8191));
    assert_eq!(p(&past).unwrap_err().status(), 414);
    let many = format!(
        "GET / HTTP/1.1\r\nHost: h\r\n{}\r\n",
        "X: y\r\n".repeat(200)
    );
    assert_eq!(p(&many).unwrap_err().status(), 431);
}

#[test]
fn a_later_http1_minor_is_served_as_1_1() {
    let served = |raw: &str| {
        let mut buf = raw.as_bytes().to_vec();
        later_minor_as_1_1(&mut buf);
        parse(&buf, &HeadLimits::default()).map(|h| h.unwrap().minor)
    };
    assert_eq!(served("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), Ok(1));
    assert_eq!(served("\r\nGET /x HTTP/1.9\r\nHost: h\r\n\r\n"), Ok(1));
    assert_eq!(served("GET / HTTP/1.0\r\n\r\n"), Ok(0));
    let refused = |raw: &str| served(raw).unwrap_err().status();
    assert_eq!(refused("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
    // Not well-formed lines keep their 400.
    assert_eq!(refused("GET / HTTP/1.10\r\nHost: h\r\n\r\n"), 400);
    assert_eq!(refused("GET HTTP/1.2\r\nHost: h\r\n\r\n"), 400);
    assert_eq!(refused("GET / HTTP/1.2\nHost: h\r\n\r\n"), 400);
    let mut short = b"HTTP/1.2\r\n\r\n".to_vec();
    later_minor_as_1_1(&mut short);
    assert_eq!(short, b"HTTP/1.2\r\n\r\n");
}
