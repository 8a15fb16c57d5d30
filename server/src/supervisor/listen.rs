//! Where the front end listens: `--host`/`--port` (IP literals or host names, every resolved
//! address), `--fd N` (an inherited listening socket), systemd socket activation
//! (`LISTEN_FDS`/`LISTEN_PID`, as sd_listen_fds(3) describes), or `--uds PATH` (uds.rs).
//!
//! Every front-end thread gets its own listener per address. Bound addresses get one
//! SO_REUSEPORT socket per thread, so the kernel spreads connections over the threads.
//! An inherited socket cannot be multiplied that way: each thread gets a `dup` of it and
//! the threads take turns accepting from the one queue.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::RawFd;

use super::uds;
use crate::config::ServeConfig;
use crate::failure::Failure;
use crate::net::Listener;
use crate::net::{bind, check_free};

/// The first file descriptor systemd passes (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: RawFd = 3;

/// The listeners, one list per front-end thread, and the addresses they listen on.
pub(super) struct Listeners {
    pub(super) per_thread: Vec<Vec<Listener>>,
    /// What the log line names: `http://addr` or `unix:path`, one per address.
    pub(super) urls: Vec<String>,
    /// `--uds`: the socket file, removed when this is dropped (after the threads stopped).
    pub(super) socket_file: Option<uds::SocketFile>,
}

pub(super) fn open(args: &ServeConfig, scheme: &str) -> Result<Listeners, Failure> {
    let threads = args.threads as usize;
    if let Some(path) = &args.uds {
        let (listener, file) = uds::bind(path, args.uds_perms, args.backlog)?;
        let mut per_thread = Vec::with_capacity(threads);
        for _ in 0..threads {
            let dup = listener.try_clone().map_err(|e| {
                Failure::new(format!("cannot dup a listener: {e}"), "check ulimit -n")
            })?;
            per_thread.push(vec![Listener::Unix(dup)]);
        }
        return Ok(Listeners {
            per_thread,
            urls: vec![format!("{scheme}+unix:{}", path.display())],
            socket_file: Some(file),
        });
    }
    let urls = |addrs: &[SocketAddr]| addrs.iter().map(|a| format!("{scheme}://{a}")).collect();
    let inherited = match args.fd {
        Some(fd) => vec![adopt(fd, "--fd")?],
        None => socket_activation()?,
    };
    if !inherited.is_empty() {
        let addrs = inherited
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| usage(format!("cannot read the inherited socket's address: {e}")))?;
        let mut per_thread = Vec::with_capacity(threads);
        for _ in 0..threads {
            let dups = inherited
                .iter()
                .map(|l| l.try_clone().map(Listener::Tcp))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    Failure::new(format!("cannot dup a listener: {e}"), "check ulimit -n")
                })?;
            per_thread.push(dups);
        }
        return Ok(Listeners {
            per_thread,
            urls: urls(&addrs),
            socket_file: None,
        });
    }
    let mut addrs = resolve(&args.host, args.port)?;
    let mut per_thread: Vec<Vec<Listener>> = (0..threads).map(|_| Vec::new()).collect();
    for addr in &mut addrs {
        check_free(*addr)?;
        for list in &mut per_thread {
            let l = bind(*addr, args.backlog)?;
            // Port 0: the first bind picks a port; every other listener takes the same one.
            *addr = l.local_addr().unwrap_or(*addr);
            list.push(Listener::Tcp(l));
        }
    }
    Ok(Listeners {
        per_thread,
        urls: urls(&addrs),
        socket_file: None,
    })
}

/// `--host` as an IP literal (`[::1]` accepted too) or a host name resolved once at start.
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Failure> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if let Some(f) = not_a_host(host) {
        return Err(f);
    }
    let found = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad_host(format!("--host {host:?} does not resolve: {e}")))?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for a in found {
        if !addrs.iter().any(|b| b.ip() == a.ip()) {
            addrs.push(a);
        }
    }
    if addrs.is_empty() {
        return Err(bad_host(format!("--host {host:?} resolves to no address")));
    }
    // With port 0 every address must share the port the first bind picks.
    if port == 0 {
        addrs.truncate(1);
    }
    Ok(addrs)
}

/// systemd socket activation: the fds 3..3+LISTEN_FDS, when LISTEN_PID names this process.
/// The variables are removed afterwards, so that workers do not take the sockets for theirs.
fn socket_activation() -> Result<Vec<TcpListener>, Failure> {
    let (Some(pid), Some(count)) = (
        std::env::var_os("LISTEN_PID"),
        std::env::var_os("LISTEN_FDS"),
    ) else {
        return Ok(Vec::new());
    };
    let pid = pid.to_str().and_then(|p| p.parse::<u32>().ok());
    if pid != Some(std::process::id()) {
        // Meant for another process (a parent that did not unset them): not ours.
        return Ok(Vec::new());
    }
    let count = count
        .to_str()
        .and_then(|c| c.parse::<RawFd>().ok())
        .filter(|&c| (1..=64).contains(&c))
        .ok_or_else(|| {
            usage(format!(
                "LISTEN_FDS={count:?} is not a number of sockets (1-64)"
            ))
        })?;
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    (LISTEN_FDS_START..LISTEN_FDS_START + count)
        .map(|fd| adopt(fd, "LISTEN_FDS"))
        .collect()
}

/// Takes over an inherited fd after checking it is a listening TCP socket.
fn adopt(fd: RawFd, from: &str) -> Result<TcpListener, Failure> {
    let sock_type = getsockopt(fd, libc::SO_TYPE).ok_or_else(|| {
        usage(format!(
            "{from}: file descriptor {fd} is not an open socket"
        ))
    })?;
    let listening = getsockopt(fd, libc::SO_ACCEPTCONN) == Some(1);
    let domain = getsockopt(fd, libc::SO_DOMAIN).unwrap_or(-1);
    if sock_type != libc::SOCK_STREAM
        || !listening
        || !matches!(domain, libc::AF_INET | libc::AF_INET6)
    {
        return Err(usage(format!(
            "{from}: file descriptor {fd} is not a listening TCP socket"
        )));
    }
    let listener = TcpListener::from(crate::sys::adopt_inherited_fd(fd));
    listener
        .set_nonblocking(true)
        .map_err(|e| usage(format!("{from}: cannot use file descriptor {fd}: {e}")))?;
    Ok(listener)
}

fn getsockopt(fd: RawFd, opt: libc::c_int) -> Option<libc::c_int> {
    crate::sys::getsockopt_int(fd, libc::SOL_SOCKET, opt).ok()
}

/// A URL or an address with its port given to --host (`http://0.0.0.0`, `0.0.0.0:8000`,
/// `[::1]:8000`): what to write instead.
fn not_a_host(host: &str) -> Option<Failure> {
    let (scheme, rest) = host.split_once("://").unwrap_or(("", host));
    let rest = rest.trim_end_matches('/');
    let (addr, port) = match rest.parse::<SocketAddr>() {
        Ok(a) => (a.ip().to_string(), Some(a.port().to_string())),
        Err(_) => match rest.rsplit_once(':') {
            Some((a, p)) if !a.contains(':') && p.parse::<u16>().is_ok() => {
                (a.to_string(), Some(p.to_string()))
            }
            _ => (rest.to_string(), None),
        },
    };
    if scheme.is_empty() && port.is_none() {
        return None;
    }
    let what = if scheme.is_empty() {
        "has a port"
    } else {
        "is a URL"
    };
    let port = port.map_or(String::new(), |p| format!(" --port {p}"));
    Some(Failure {
        code: 2,
        ..Failure::new(
            format!("--host {host:?} {what}: --host takes the address alone"),
            format!("write --host {addr}{port}"),
        )
    })
}

fn bad_host(error: String) -> Failure {
    Failure {
        code: 2,
        ..Failure::new(
            error,
            "give --host an IP address (0.0.0.0 or :: for every interface, 127.0.0.1 for this machine only) or a name this machine resolves (/etc/hosts, DNS)",
        )
    }
}

fn usage(error: String) -> Failure {
    Failure {
        code: 2,
        ..Failure::new(
            error,
            "pass --fd the number of an inherited listening TCP socket, or start uringapi from a systemd .socket unit; otherwise use --host/--port",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_names_resolve() {
        assert_eq!(
            resolve("127.0.0.1", 80).unwrap(),
            vec!["127.0.0.1:80".parse().unwrap()]
        );
        assert_eq!(
            resolve("::1", 80).unwrap(),
            vec!["[::1]:80".parse().unwrap()]
        );
        assert_eq!(
            resolve("[::1]", 80).unwrap(),
            vec!["[::1]:80".parse().unwrap()]
        );
        let local = resolve("localhost", 80).unwrap();
        assert!(local.iter().all(|a| a.ip().is_loopback()), "{local:?}");
        assert_eq!(resolve("localhost", 0).unwrap().len(), 1);
        assert_eq!(resolve("no-such-host.invalid", 80).unwrap_err().code, 2);
    }

    #[test]
    fn a_url_or_a_port_given_to_host_says_what_to_write() {
        for (host, hint) in [
            ("0.0.0.0:8000", "write --host 0.0.0.0 --port 8000"),
            ("[::1]:8000", "write --host ::1 --port 8000"),
            ("localhost:9000", "write --host localhost --port 9000"),
            ("http://0.0.0.0", "write --host 0.0.0.0"),
            ("http://0.0.0.0:8000/", "write --host 0.0.0.0 --port 8000"),
        ] {
            let f = resolve(host, 80).unwrap_err();
            assert_eq!((f.code, f.hint.as_str()), (2, hint), "{host}: {}", f.error);
        }
    }

    #[test]
    fn a_non_socket_fd_is_refused() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let e = adopt(fd, "--fd").unwrap_err();
        assert!(e.error.contains("not an open socket"), "{}", e.error);
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = adopt(std::os::fd::AsRawFd::as_raw_fd(&udp), "--fd").unwrap_err();
        assert!(
            e.error.contains("not a listening TCP socket"),
            "{}",
            e.error
        );
    }
}
