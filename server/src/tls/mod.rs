//! TLS in the front end: rustls (ring provider) driven over the connection's own socket.
//!
//! - `config`: uvicorn's `--ssl-*` flags, the files they name, and the `ServerConfig` built
//!   from them (reloaded on SIGHUP).
//! - `transport`: what a connection reads and writes through, plain TCP (zero-copy `writev`
//!   from shared memory, unchanged) or TLS (rustls encrypts from the shared-memory slice).
//! - `names`: a certificate subject as an RFC 4514 string (`client_cert_name`).
//! - `ktls`: `--ktls`: the probe, handing a connection's keys to the kernel, and the fallback.
//! - `crypto_info`: the kernel's key structs built from rustls's secrets.

mod config;
pub mod crypto_info;
pub mod ktls;
mod names;
mod transport;

pub use config::{Acceptor, Loaded, TlsConfig, DEFAULT_CIPHERS, DEFAULT_PROTOCOL_MIN};
pub use transport::{handshake, TlsStream, Transport};
