//! `--proxy-headers` and `--forwarded-allow-ips`: taking the client address and scheme from
//! `X-Forwarded-For` / `X-Forwarded-Proto`, but only when the connection comes from a proxy
//! the operator trusts. Semantics follow uvicorn's, so apps see the same scope under both.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trusted {
    /// `*`: every peer.
    any: bool,
    nets: Vec<IpNet>,
}

impl Trusted {
    /// Parses a comma-separated list of IP addresses, CIDR networks, or `*`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut t = Self::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                t.any = true;
                continue;
            }
            // A bare address is a network of one (a /32 or /128).
            let net = match item.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) if item.contains('/') => {
                    return Err(format!(
                        "{item:?} is not an IP network (address/prefix length)"
                    ))
                }
                Err(_) => IpNet::from(
                    item.parse::<IpAddr>()
                        .map_err(|_| format!("{item:?} is not an IP address or network"))?,
                ),
            };
            t.nets.push(net);
        }
        Ok(t)
    }

    /// Whether the connection's peer is a trusted proxy. A Unix socket's peer (`None`) has
    /// no address to match: only `*` trusts it, as in uvicorn.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.map_or(self.any, |ip| self.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.any || self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client address an `X-Forwarded-For` value names: walking from the right (the
    /// hop nearest to us), the first address that is not a trusted proxy; if all are
    /// trusted, the leftmost. With `*`, the leftmost. A hop may carry a port (`a.b.c.d:p`,
    /// `[v6]:p`); without one the port is 0. `None` if the chosen hop is not an IP address
    /// (uvicorn would pass such a string on; we keep the connection's peer instead).
    pub fn client(&self, xff: &[u8]) -> Option<SocketAddr> {
        let text = std::str::from_utf8(xff).ok()?;
        let hops: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let pick = if self.any {
            hops.first()
        } else {
            hops.iter()
                .rev()
                .find(|h| parse_hop(h).is_none_or(|a| !self.contains(a.ip())))
                .or(hops.first())
        }?;
        parse_hop(pick)
    }
}

/// The client address and scheme (`true`: https) an app sees for a request with these
/// fields, from a connection whose peer is `peer`: the connection's own, or, when `proxies`
/// (`--proxy-headers`) trusts the peer, what X-Forwarded-For/-Proto say. The same for
/// HTTP/1.1 requests and HTTP/2 streams.
pub fn forwarded<'a>(
    proxies: Option<&Trusted>,
    peer: Option<SocketAddr>,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> (Option<SocketAddr>, bool) {
    let Some(trusted) = proxies.filter(|t| t.trusts(peer.map(|a| a.ip()))) else {
        return (peer, false);
    };
    let mut https = false;
    let mut xff: Vec<u8> = Vec::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"x-forwarded-proto") {
            // The last one wins, as in uvicorn.
            if let Some(h) = self::https(value) {
                https = h;
            }
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            // Several fields are one list (RFC 9110 §5.3).
            if !xff.is_empty() {
                xff.extend_from_slice(b", ");
            }
            xff.extend_from_slice(value);
        }
    }
    let client = if xff.is_empty() {
        None
    } else {
        trusted.client(&xff)
    };
    (client.or(peer), https)
}

/// An address as it appears in X-Forwarded-For: an IP, `v4:port`, `[v6]` or `[v6]:port`.
fn parse_hop(h: &str) -> Option<SocketAddr> {
    if let Some(rest) = h.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().unwrap_or(0),
            None if after.is_empty() => 0,
            None => return None,
        };
        return Some(SocketAddr::new(ip.parse().ok()?, port));
    }
    if h.matches(':').count() == 1 {
        let (ip, port) = h.split_once(':')?;
        return Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?));
    }
    Some(SocketAddr::new(h.parse().ok()?, 0))
}

/// The scheme an `X-Forwarded-Proto` value names: `Some(true)` for https, `Some(false)`
/// for http, `None` for anything else, which is ignored. Exact lowercase, as uvicorn.
/// (ws/wss only matter for websocket scopes, which uringapi does not serve; uvicorn puts
/// them into an http scope's scheme verbatim, we map them to http/https.)
pub fn https(proto: &[u8]) -> Option<bool> {
    match proto.trim_ascii() {
        b"https" | b"wss" => Some(true),
        b"http" | b"ws" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_unix_socket_peer_is_trusted_only_by_star() {
        assert!(!Trusted::parse("127.0.0.1").unwrap().trusts(None));
        assert!(Trusted::parse("*").unwrap().trusts(None));
        assert!(Trusted::parse("127.0.0.1")
            .unwrap()
            .trusts(Some("127.0.0.1".parse().unwrap())));
    }

    #[test]
    fn parses_addresses_networks_and_star() {
        let t = Trusted::parse("127.0.0.1, 10.0.0.0/8,::1").unwrap();
        assert!(t.contains(ip("127.0.0.1")));
        assert!(t.contains(ip("10.200.3.4")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("::ffff:10.1.1.1")));
        assert!(!t.contains(ip("11.0.0.1")));
        assert!(Trusted::parse("*").unwrap().contains(ip("8.8.8.8")));
        assert!(Trusted::parse("10.0.0.0/33").is_err());
        assert!(Trusted::parse("example.com").is_err());
        assert!(!Trusted::parse("").unwrap().contains(ip("127.0.0.1")));
    }

    #[test]
    fn client_is_the_nearest_untrusted_hop() {
        let t = Trusted::parse("127.0.0.1,10.0.0.0/8").unwrap();
        let cases: &[(&str, Option<&str>)] = &[
            ("1.2.3.4", Some("1.2.3.4")),
            ("6.6.6.6, 1.2.3.4, 10.0.0.2", Some("1.2.3.4")),
            ("10.0.0.3, 10.0.0.2", Some("10.0.0.3")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("unknown", None),
            ("", None),
        ];
        for (xff, want) in cases {
            let got = t.client(xff.as_bytes()).map(|a| a.ip());
            assert_eq!(got, want.map(ip), "{xff}");
        }
        let any = Trusted::parse("*").unwrap();
        assert_eq!(
            any.client(b"6.6.6.6:81, 1.2.3.4"),
            Some("6.6.6.6:81".parse().unwrap())
        );
        assert_eq!(
            t.client(b"[2001:db8::2]:443"),
            Some("[2001:db8::2]:443".parse().unwrap())
        );
    }

    #[test]
    fn forwarded_fields_count_only_from_a_trusted_peer() {
        let t = Trusted::parse("127.0.0.1").unwrap();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let other: SocketAddr = "127.0.0.2:5000".parse().unwrap();
        let fields: [(&[u8], &[u8]); 3] = [
            (b"X-Forwarded-For", b"9.9.9.9"),
            (b"x-forwarded-for", b"1.2.3.4"),
            (b"x-forwarded-proto", b"https"),
        ];
        assert_eq!(
            forwarded(Some(&t), Some(peer), fields),
            (Some("1.2.3.4:0".parse().unwrap()), true)
        );
        assert_eq!(
            forwarded(Some(&t), Some(other), fields),
            (Some(other), false)
        );
        assert_eq!(forwarded(None, Some(peer), fields), (Some(peer), false));
    }

    #[test]
    fn proto_values() {
        assert_eq!(https(b"https"), Some(true));
        assert_eq!(https(b" http "), Some(false));
        assert_eq!(https(b"HTTPS"), None);
        assert_eq!(https(b"wss"), Some(true));
        assert_eq!(https(b"ftp"), None);
    }
}
