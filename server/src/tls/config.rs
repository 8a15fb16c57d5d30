//! The TLS settings (uvicorn's `--ssl-*` names and meanings) and the rustls `ServerConfig`
//! they make. Every way a file can be wrong is an `error:` + `hint:` at start-up (exit 2); on
//! SIGHUP the same loading runs again and a failure keeps the config in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::ring as provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};

use crate::failure::Failure;

/// What uvicorn's TLS flags say (`uringapi-cli` parses them; same names). TLS is on when
/// `ssl_certfile` and `ssl_keyfile` are both given.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1; PKCS#8 may be encrypted).
    pub ssl_keyfile: Option<PathBuf>,
    /// TLS certificate chain (PEM, leaf first).
    pub ssl_certfile: Option<PathBuf>,
    /// Password of an encrypted (PKCS#8) --ssl-keyfile.
    pub ssl_keyfile_password: Option<String>,
    /// CA certificates (PEM) that client certificates are checked against.
    pub ssl_ca_certs: Option<PathBuf>,
    /// Client certificates: 0 not asked for, 1 optional, 2 required (mutual TLS).
    pub ssl_cert_reqs: u8,
    /// Cipher suites, colon-separated (OpenSSL or IANA names of the suites rustls has);
    /// uvicorn's default `TLSv1` means all of them.
    pub ssl_ciphers: String,
    /// Oldest TLS version accepted: 1.2 or 1.3.
    pub ssl_protocol_min: String,
    /// Hand the symmetric crypto to the kernel (kTLS) after the handshake when it has it;
    /// falls back to rustls with one log line when it does not.
    pub ktls: bool,
    /// The protocols offered by ALPN, preferred first (set from `--http`); empty:
    /// `http/1.1` alone.
    pub alpn: Vec<Vec<u8>>,
}

/// `--ssl-ciphers` when not given: uvicorn's `TLSv1`, every suite rustls has.
pub const DEFAULT_CIPHERS: &str = "TLSv1";
/// `--ssl-protocol-min` when not given.
pub const DEFAULT_PROTOCOL_MIN: &str = "1.2";

impl TlsConfig {
    /// Whether TLS is asked for at all; one of the two files alone is a mistake, and so is
    /// any other TLS setting without them (it would be dropped without a word).
    pub fn enabled(&self) -> Result<bool, Failure> {
        match (&self.ssl_certfile, &self.ssl_keyfile) {
            (Some(_), Some(_)) => Ok(true),
            (None, None) => {
                let stray = [
                    (
                        self.ssl_keyfile_password.is_some(),
                        "--ssl-keyfile-password",
                    ),
                    (self.ssl_ca_certs.is_some(), "--ssl-ca-certs"),
                    (self.ssl_cert_reqs != 0, "--ssl-cert-reqs"),
                    (self.ktls, "--ktls"),
                    (self.ssl_ciphers != DEFAULT_CIPHERS, "--ssl-ciphers"),
                    (
                        self.ssl_protocol_min != DEFAULT_PROTOCOL_MIN,
                        "--ssl-protocol-min",
                    ),
                ];
                match stray.iter().find(|(set, _)| *set) {
                    Some((_, flag)) => Err(usage(
                        format!("{flag} was given without --ssl-certfile and --ssl-keyfile"),
                        "TLS is on only with both --ssl-certfile and --ssl-keyfile",
                    )),
                    None => Ok(false),
                }
            }
            (Some(_), None) => Err(usage(
                "--ssl-certfile was given without --ssl-keyfile",
                "pass the certificate's private key with --ssl-keyfile",
            )),
            (None, Some(_)) => Err(usage(
                "--ssl-keyfile was given without --ssl-certfile",
                "pass the certificate chain with --ssl-certfile",
            )),
        }
    }
}

fn usage(error: impl Into<String>, hint: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        ..Failure::new(error, hint)
    }
}

/// The TLS config new handshakes use; shared by every front-end thread, swapped on reload.
/// Handshakes already done keep the config they started with.
#[derive(Clone)]
pub struct Acceptor {
    args: Arc<TlsConfig>,
    current: Arc<RwLock<Loaded>>,
}

/// A config and the leaf certificate it serves (for the tls extension's `server_cert`).
#[derive(Clone)]
pub struct Loaded {
    pub config: Arc<ServerConfig>,
    pub leaf: Arc<[u8]>,
    /// `--ktls` on a kernel that has it: HTTP/1.1 connections move to kTLS.
    pub ktls: bool,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("certfile", &self.args.ssl_certfile)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// Loads the files named by `args` (checked by `TlsConfig::enabled`).
    pub fn new(args: &TlsConfig) -> Result<Self, Failure> {
        let loaded = build(args)?;
        Ok(Self {
            args: Arc::new(args.clone()),
            current: Arc::new(RwLock::new(loaded)),
        })
    }

    /// The config for a new handshake.
    pub fn current(&self) -> Loaded {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn ktls(&self) -> bool {
        self.args.ktls
    }

    /// Reads the files again (SIGHUP). A failure keeps the config in force and says why.
    pub fn reload(&self) {
        match build(&self.args) {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
                tracing::info!("SIGHUP: TLS certificate and key reloaded; new handshakes use them");
            }
            Err(f) => tracing::error!(
                error = %f.error,
                hint = %f.hint,
                "SIGHUP: TLS files not reloaded; the previous certificate stays in use"
            ),
        }
    }
}

/// The protocol versions, oldest first, as `--ssl-protocol-min` names them.
fn versions(min: &str) -> Result<&'static [&'static rustls::SupportedProtocolVersion], Failure> {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS12, &rustls::version::TLS13];
    static ONLY13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min
        .trim()
        .trim_start_matches("TLSv")
        .trim_start_matches("tls")
    {
        "1.2" | "1_2" => Ok(&BOTH),
        "1.3" | "1_3" => Ok(&ONLY13),
        other => Err(usage(
            format!("--ssl-protocol-min {other:?} is not a TLS version uringapi speaks"),
            "use 1.2 (TLS 1.2 and 1.3, the default) or 1.3 (TLS 1.3 only)",
        )),
    }
}

/// Whether `--ssl-ciphers` names no suites of its own (uvicorn's default and its synonyms).
fn is_default(spec: &str) -> bool {
    let spec = spec.trim();
    spec.is_empty() || ["TLSv1", "TLSv1.2", "DEFAULT", "ALL", "HIGH"].contains(&spec)
}

/// AES-GCM runs in hardware here (AES and carry-less multiply instructions).
fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The server's order under the default `--ssl-ciphers` on a CPU with AES in hardware (the
/// choice Go's crypto/tls makes): AES-128-GCM, then AES-256-GCM, then ChaCha20-Poly1305,
/// whatever order the client lists them in. OpenSSL clients (curl, wrk, Python) list
/// AES-256-GCM-SHA384 first, whose key schedule and transcript run on SHA-384, which has
/// no hardware instructions here, where SHA-256 does.
/// PERF: https-hello-newconn (benches/e2e, wrk/OpenSSL 3.0 client, 2 shared cores): the same
/// build with AES-128-GCM-SHA256 took 242-253 CPU-µs per handshake and request against
/// 323-340 with the client's AES-256-GCM-SHA384.
fn aes128_first(suite: &SupportedCipherSuite) -> u8 {
    let name = format!("{:?}", suite.suite());
    if name.contains("AES_128_GCM") {
        0
    } else if name.contains("AES_256_GCM") {
        1
    } else {
        2
    }
}

/// OpenSSL's names for the suites rustls (ring) has; IANA names are matched too.
const OPENSSL_NAMES: &[(&str, &str)] = &[
    ("TLS_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256"),
    ("TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384"),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS13_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// The suites `--ssl-ciphers` names. uvicorn's default `TLSv1` (and `DEFAULT`, `ALL`) mean
/// every suite rustls offers; anything else must name suites it has.
fn cipher_suites(spec: &str) -> Result<Vec<SupportedCipherSuite>, Failure> {
    let all = provider::ALL_CIPHER_SUITES;
    if is_default(spec) {
        return Ok(all.to_vec());
    }
    let spec = spec.trim();
    let name_of = |s: &SupportedCipherSuite| format!("{:?}", s.suite());
    let mut chosen = Vec::new();
    for name in spec
        .split([':', ','])
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let iana = OPENSSL_NAMES
            .iter()
            .find(|(openssl, _)| openssl.eq_ignore_ascii_case(name))
            .map_or(name, |(_, iana)| iana);
        match all.iter().find(|s| name_of(s).eq_ignore_ascii_case(iana)) {
            Some(s)
                if !chosen
                    .iter()
                    .any(|c: &SupportedCipherSuite| c.suite() == s.suite()) =>
            {
                chosen.push(*s)
            }
            Some(_) => {}
            None => {
                let known: Vec<&str> = OPENSSL_NAMES.iter().map(|(o, _)| *o).collect();
                return Err(usage(
                    format!("--ssl-ciphers names {name:?}, a cipher suite rustls does not have"),
                    format!(
                        "use TLSv1 (all of them) or a colon-separated list of: {}",
                        known.join(":")
                    ),
                ));
            }
        }
    }
    if chosen.is_empty() {
        return Err(usage(
            "--ssl-ciphers names no cipher suite",
            "use TLSv1 (all of them)",
        ));
    }
    Ok(chosen)
}

fn read(path: &Path, what: &str, flag: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| {
        usage(
            format!("cannot read the {what} {}: {e}", path.display()),
            format!("{flag} must name a readable PEM file"),
        )
    })
}

fn certs(path: &Path, what: &str, flag: &str) -> Result<Vec<CertificateDer<'static>>, Failure> {
    let pem = read(path, what, flag)?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(usage(
            format!("{} holds no certificate", path.display()),
            format!("{flag} must name a PEM file with -----BEGIN CERTIFICATE----- blocks"),
        )),
        Err(e) => Err(usage(
            format!("{} is not valid PEM: {e}", path.display()),
            format!("{flag} must name a PEM file with -----BEGIN CERTIFICATE----- blocks"),
        )),
    }
}

fn private_key(path: &Path, password: Option<&str>) -> Result<PrivateKeyDer<'static>, Failure> {
    let pem = read(path, "private key", "--ssl-keyfile")?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let Some(password) = password else {
            return Err(usage(
                format!(
                    "the private key {} is encrypted and no password was given",
                    path.display()
                ),
                "pass its password with --ssl-keyfile-password (or URINGAPI_SSL_KEYFILE_PASSWORD)",
            ));
        };
        let start = text
            .find("-----BEGIN ENCRYPTED PRIVATE KEY-----")
            .unwrap_or(0);
        let not_pkcs8 = |e: &dyn std::fmt::Display| {
            usage(
                format!(
                    "{} is not a valid encrypted PKCS#8 key: {e}",
                    path.display()
                ),
                "write it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`",
            )
        };
        let (_, der) =
            pkcs8::der::pem::decode_vec(text[start..].as_bytes()).map_err(|e| not_pkcs8(&e))?;
        let info =
            pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice()).map_err(|e| not_pkcs8(&e))?;
        let plain = info.decrypt(password.as_bytes()).map_err(|e| {
            usage(
                format!("cannot decrypt the private key {}: {e}", path.display()),
                "check --ssl-keyfile-password: it is most likely wrong",
            )
        })?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(usage(
            format!(
                "the private key {} is encrypted in the legacy OpenSSL format",
                path.display()
            ),
            "convert it to encrypted PKCS#8: openssl pkcs8 -topk8 -v2 aes-256-cbc -in OLD -out NEW",
        ));
    }
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(usage(
            format!("{} holds no private key", path.display()),
            "--ssl-keyfile must name a PEM file with a PRIVATE KEY block (PKCS#8, RSA or EC)",
        )),
        Err(e) => Err(usage(
            format!("{} is not valid PEM: {e}", path.display()),
            "--ssl-keyfile must name a PEM file with a PRIVATE KEY block (PKCS#8, RSA or EC)",
        )),
    }
}

/// Builds the config from the files; every failure names the file and what to do.
fn build(args: &TlsConfig) -> Result<Loaded, Failure> {
    let (Some(certfile), Some(keyfile)) = (&args.ssl_certfile, &args.ssl_keyfile) else {
        return Err(usage(
            "TLS needs --ssl-certfile and --ssl-keyfile",
            "pass both",
        ));
    };
    let versions = versions(&args.ssl_protocol_min)?;
    let mut crypto = provider::default_provider();
    crypto.cipher_suites = cipher_suites(&args.ssl_ciphers)?;
    let server_order = is_default(&args.ssl_ciphers) && aes_in_hardware();
    if server_order {
        crypto.cipher_suites.sort_by_key(aes128_first);
    }
    if !crypto
        .cipher_suites
        .iter()
        .any(|s| versions.iter().any(|v| s.version() == *v))
    {
        return Err(usage(
            "--ssl-ciphers leaves no cipher suite for the versions --ssl-protocol-min allows",
            "name at least one TLS 1.3 suite (TLS_AES_128_GCM_SHA256) with --ssl-protocol-min 1.3",
        ));
    }
    let crypto = Arc::new(crypto);
    let chain = certs(certfile, "certificate", "--ssl-certfile")?;
    let key = private_key(keyfile, args.ssl_keyfile_password.as_deref())?;
    let signer = crypto.key_provider.load_private_key(key).map_err(|e| {
        usage(
            format!("the private key {} cannot be used: {e}", keyfile.display()),
            "use an RSA, ECDSA (P-256/P-384) or Ed25519 key",
        )
    })?;
    let leaf: Arc<[u8]> = chain[0].as_ref().into();
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        usage(
            format!(
                "the private key {} does not match the certificate {}: {e}",
                keyfile.display(),
                certfile.display()
            ),
            "--ssl-keyfile must be the key the --ssl-certfile certificate was issued for",
        )
    })?;
    let builder = ServerConfig::builder_with_provider(crypto.clone())
        .with_protocol_versions(versions)
        .map_err(|e| {
            usage(
                format!("TLS settings rejected: {e}"),
                "check --ssl-ciphers and --ssl-protocol-min",
            )
        })?;
    // What decides which client certificates are good: sessions made under other rules
    // must not resume (a reload that drops a CA would let its clients back in).
    let mut client_auth = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&args.ssl_cert_reqs, &mut client_auth);
    let builder = match (args.ssl_cert_reqs, &args.ssl_ca_certs) {
        (0, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(usage(
                format!(
                    "--ssl-cert-reqs {} needs --ssl-ca-certs",
                    args.ssl_cert_reqs
                ),
                "name the CA certificates that client certificates are checked against",
            ))
        }
        (reqs, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(ca, "CA certificates", "--ssl-ca-certs")? {
                std::hash::Hash::hash(cert.as_ref(), &mut client_auth);
                roots.add(cert).map_err(|e| {
                    usage(
                        format!("a CA certificate in {} is unusable: {e}", ca.display()),
                        "--ssl-ca-certs must hold X.509 CA certificates",
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto);
            let verifier = if reqs == 1 {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| {
                usage(
                    format!(
                        "cannot check client certificates against {}: {e}",
                        ca.display()
                    ),
                    "--ssl-ca-certs must hold X.509 CA certificates",
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(OneCert(Arc::new(certified))));
    // ALPN (RFC 7301): h2 first when HTTP/2 is on, as clients expect of a server that has it.
    config.alpn_protocols = if args.alpn.is_empty() {
        vec![b"http/1.1".to_vec()]
    } else {
        args.alpn.clone()
    };
    if args.ktls {
        config.enable_secret_extraction = true;
    }
    config.ignore_client_order = server_order;
    let resumption = resumption(std::hash::Hasher::finish(&client_auth))?;
    config.ticketer = resumption.ticketer.clone();
    config.session_storage = resumption.sessions.clone();
    Ok(Loaded {
        config: Arc::new(config),
        leaf,
        ktls: args.ktls && super::ktls::available(),
    })
}

/// How returning clients skip the full handshake. Kept across SIGHUP reloads, so that what
/// was issued before one still resumes after it, unless the client-certificate rules
/// changed.
struct Resumption {
    /// Stateless tickets (TLS 1.3, and TLS 1.2 clients that ask): the session sealed with a
    /// key only this process has, rotated every 6 hours by rustls.
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    /// Session ids, for TLS 1.2 clients without tickets.
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
    /// A hash of the client-certificate rules (--ssl-cert-reqs, the --ssl-ca-certs
    /// certificates) the sessions were made under.
    client_auth: u64,
}

/// Sessions the id cache keeps: OpenSSL's default, as uvicorn has it. rustls's default of
/// 256 (granian's) lost the session of every client past the 256th: none of them resumed.
const SESSION_CACHE: usize = 20 * 1024;

/// The process's resumption state for these client-certificate rules: the one in use, or a
/// new one (no session resumes) when the rules differ from those it was made under.
fn resumption(client_auth: u64) -> Result<Arc<Resumption>, Failure> {
    static CURRENT: std::sync::Mutex<Option<Arc<Resumption>>> = std::sync::Mutex::new(None);
    let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = current.as_ref().filter(|r| r.client_auth == client_auth) {
        return Ok(r.clone());
    }
    let ticketer = provider::Ticketer::new().map_err(|e| {
        Failure::new(
            format!("cannot make TLS session tickets: {e}"),
            "the system's random number generator failed; this is rare, please report it",
        )
    })?;
    let fresh = Arc::new(Resumption {
        ticketer,
        sessions: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE),
        client_auth,
    });
    *current = Some(fresh.clone());
    Ok(fresh)
}

/// The one certificate chain of a config (a reload builds a new config around a new one).
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_names_map_from_openssl_and_iana_and_unknown_ones_are_refused() {
        let all = cipher_suites("TLSv1").unwrap();
        assert_eq!(all.len(), provider::ALL_CIPHER_SUITES.len());
        let two = cipher_suites("TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256").unwrap();
        let names: Vec<String> = two.iter().map(|s| format!("{:?}", s.suite())).collect();
        assert_eq!(
            names,
            [
                "TLS13_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
            ]
        );
        let iana = cipher_suites("TLS13_CHACHA20_POLY1305_SHA256").unwrap();
        assert_eq!(iana.len(), 1);
        let bad = cipher_suites("AES128-SHA:RC4-MD5").unwrap_err();
        assert_eq!(bad.code, 2);
        assert!(bad.error.contains("AES128-SHA"), "{}", bad.error);
        assert!(
            bad.hint.contains("ECDHE-ECDSA-AES128-GCM-SHA256"),
            "{}",
            bad.hint
        );
    }

    #[test]
    fn server_order_puts_aes128_then_aes256_then_chacha_in_each_version() {
        let mut all = cipher_suites("TLSv1").unwrap();
        all.sort_by_key(aes128_first);
        let names: Vec<String> = all.iter().map(|s| format!("{:?}", s.suite())).collect();
        let rank = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(rank("TLS13_AES_128_GCM_SHA256") < rank("TLS13_AES_256_GCM_SHA384"));
        assert!(rank("TLS13_AES_256_GCM_SHA384") < rank("TLS13_CHACHA20_POLY1305_SHA256"));
        let ecdsa128 = rank("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
        assert!(ecdsa128 < rank("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"));
        assert_eq!(names.len(), provider::ALL_CIPHER_SUITES.len());
        assert!(is_default(" TLSv1 ") && !is_default("TLS_AES_128_GCM_SHA256"));
    }

    #[test]
    fn protocol_min_takes_12_and_13_only() {
        assert_eq!(versions("1.2").unwrap().len(), 2);
        assert_eq!(versions("TLSv1.3").unwrap().len(), 1);
        for bad in ["1.1", "1.0", "", "2"] {
            assert_eq!(versions(bad).unwrap_err().code, 2, "{bad}");
        }
    }
}
