//! uvicorn's `--ssl-*` flags and `--ktls`; what they mean is `uringapi_server::tls`'s business.

use std::path::PathBuf;

use uringapi_server::tls::{self, TlsConfig};

/// uvicorn's TLS flags. TLS is on when `--ssl-certfile` and `--ssl-keyfile` are given.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1; PKCS#8 may be encrypted).
    #[arg(long, env = "URINGAPI_SSL_KEYFILE")]
    pub ssl_keyfile: Option<PathBuf>,
    /// TLS certificate chain (PEM, leaf first).
    #[arg(long, env = "URINGAPI_SSL_CERTFILE")]
    pub ssl_certfile: Option<PathBuf>,
    /// Password of an encrypted (PKCS#8) --ssl-keyfile.
    #[arg(long, env = "URINGAPI_SSL_KEYFILE_PASSWORD")]
    pub ssl_keyfile_password: Option<String>,
    /// CA certificates (PEM) that client certificates are checked against.
    #[arg(long, env = "URINGAPI_SSL_CA_CERTS")]
    pub ssl_ca_certs: Option<PathBuf>,
    /// Client certificates: 0 not asked for, 1 optional, 2 required (mutual TLS).
    #[arg(long, default_value_t = 0, env = "URINGAPI_SSL_CERT_REQS", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub ssl_cert_reqs: u8,
    /// Cipher suites, colon-separated (OpenSSL or IANA names of the suites rustls has);
    /// uvicorn's default `TLSv1` means all of them.
    #[arg(long, default_value = tls::DEFAULT_CIPHERS, env = "URINGAPI_SSL_CIPHERS")]
    pub ssl_ciphers: String,
    /// Oldest TLS version accepted: 1.2 or 1.3.
    #[arg(long, default_value = tls::DEFAULT_PROTOCOL_MIN, env = "URINGAPI_SSL_PROTOCOL_MIN")]
    pub ssl_protocol_min: String,
    /// Hand the symmetric crypto to the kernel (kTLS) after the handshake when it has it;
    /// falls back to rustls with one log line when it does not.
    #[arg(long, env = "URINGAPI_KTLS")]
    pub ktls: bool,
}

impl From<TlsArgs> for TlsConfig {
    fn from(a: TlsArgs) -> Self {
        let TlsArgs {
            ssl_keyfile,
            ssl_certfile,
            ssl_keyfile_password,
            ssl_ca_certs,
            ssl_cert_reqs,
            ssl_ciphers,
            ssl_protocol_min,
            ktls,
        } = a;
        TlsConfig {
            ssl_keyfile,
            ssl_certfile,
            ssl_keyfile_password,
            ssl_ca_certs,
            ssl_cert_reqs,
            ssl_ciphers,
            ssl_protocol_min,
            ktls,
            // Set by `serve` from `--http`.
            alpn: Vec::new(),
        }
    }
}
