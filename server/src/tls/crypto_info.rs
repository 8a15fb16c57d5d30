//! The kernel's `tls12_crypto_info_*` structs (`<linux/tls.h>`) built from the traffic
//! secrets rustls hands over after a handshake, one per direction, for
//! `setsockopt(SOL_TLS, TLS_TX/TLS_RX)`.
//!
//! Placement, the same for TLS 1.2 and 1.3: rustls gives a 12-byte IV per direction. For
//! AES-GCM the kernel wants its first 4 bytes as `salt` and the other 8 as `iv` (TLS 1.2: the
//! first explicit nonce; TLS 1.3: the rest of the static IV the record number is XORed
//! into); ChaCha20-Poly1305 has no salt and takes all 12 as `iv`. `rec_seq` is the next
//! record number in that direction, big-endian. The layouts are checked against the C
//! header by a test that compiles a small program with gcc (bottom of this file).

use rustls::{ConnectionTrafficSecrets, ProtocolVersion};

/// `SOL_TLS` setsockopt names and `cmsg` types (`<linux/tls.h>`).
pub const TLS_TX: libc::c_int = 1;
pub const TLS_RX: libc::c_int = 2;
pub const TLS_SET_RECORD_TYPE: libc::c_int = 1;

const TLS_1_2_VERSION: u16 = 0x0303;
const TLS_1_3_VERSION: u16 = 0x0304;
const TLS_CIPHER_AES_GCM_128: u16 = 51;
const TLS_CIPHER_AES_GCM_256: u16 = 52;
const TLS_CIPHER_CHACHA20_POLY1305: u16 = 54;

/// `struct tls_crypto_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub version: u16,
    pub cipher_type: u16,
}

/// `struct tls12_crypto_info_aes_gcm_128`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Aes128Gcm {
    pub info: Header,
    pub iv: [u8; 8],
    pub key: [u8; 16],
    pub salt: [u8; 4],
    pub rec_seq: [u8; 8],
}

/// `struct tls12_crypto_info_aes_gcm_256`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Aes256Gcm {
    pub info: Header,
    pub iv: [u8; 8],
    pub key: [u8; 32],
    pub salt: [u8; 4],
    pub rec_seq: [u8; 8],
}

/// `struct tls12_crypto_info_chacha20_poly1305` (its `salt` has size 0).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Chacha20Poly1305 {
    pub info: Header,
    pub iv: [u8; 12],
    pub key: [u8; 32],
    pub salt: [u8; 0],
    pub rec_seq: [u8; 8],
}

const _: () = assert!(std::mem::size_of::<Aes128Gcm>() == 40);
const _: () = assert!(std::mem::size_of::<Aes256Gcm>() == 56);
const _: () = assert!(std::mem::size_of::<Chacha20Poly1305>() == 56);

/// One direction's keys, in the struct the kernel expects for the suite.
pub enum CryptoInfo {
    Aes128Gcm(Aes128Gcm),
    Aes256Gcm(Aes256Gcm),
    Chacha20Poly1305(Chacha20Poly1305),
}

/// Why a connection's keys cannot go to the kernel (it keeps rustls).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error("kTLS takes TLS 1.2 and 1.3 only, not {0:?}")]
    Version(ProtocolVersion),
    #[error("kTLS here takes AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305 only")]
    Suite,
    #[error("rustls gave a {got}-byte {what}, the kernel takes {want}")]
    Length {
        what: &'static str,
        got: usize,
        want: usize,
    },
}

fn copy<const N: usize>(what: &'static str, from: &[u8]) -> Result<[u8; N], Unsupported> {
    from.try_into().map_err(|_| Unsupported::Length {
        what,
        got: from.len(),
        want: N,
    })
}

impl CryptoInfo {
    /// The struct for one direction: `seq` is the next record number rustls would have used.
    pub fn new(
        version: ProtocolVersion,
        seq: u64,
        secrets: &ConnectionTrafficSecrets,
    ) -> Result<Self, Unsupported> {
        let version = match version {
            ProtocolVersion::TLSv1_2 => TLS_1_2_VERSION,
            ProtocolVersion::TLSv1_3 => TLS_1_3_VERSION,
            other => return Err(Unsupported::Version(other)),
        };
        let rec_seq = seq.to_be_bytes();
        let header = |cipher_type| Header {
            version,
            cipher_type,
        };
        Ok(match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
                let iv: [u8; 12] = copy("IV", iv.as_ref())?;
                Self::Aes128Gcm(Aes128Gcm {
                    info: header(TLS_CIPHER_AES_GCM_128),
                    salt: copy("salt", &iv[..4])?,
                    iv: copy("IV", &iv[4..])?,
                    key: copy("key", key.as_ref())?,
                    rec_seq,
                })
            }
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
                let iv: [u8; 12] = copy("IV", iv.as_ref())?;
                Self::Aes256Gcm(Aes256Gcm {
                    info: header(TLS_CIPHER_AES_GCM_256),
                    salt: copy("salt", &iv[..4])?,
                    iv: copy("IV", &iv[4..])?,
                    key: copy("key", key.as_ref())?,
                    rec_seq,
                })
            }
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                Self::Chacha20Poly1305(Chacha20Poly1305 {
                    info: header(TLS_CIPHER_CHACHA20_POLY1305),
                    iv: copy("IV", iv.as_ref())?,
                    key: copy("key", key.as_ref())?,
                    salt: [],
                    rec_seq,
                })
            }
            _ => return Err(Unsupported::Suite),
        })
    }

    /// The struct's address and size, for `setsockopt`.
    pub fn as_option(&self) -> (*const libc::c_void, libc::socklen_t) {
        fn raw<T>(t: &T) -> (*const libc::c_void, libc::socklen_t) {
            (
                (t as *const T).cast(),
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        }
        match self {
            Self::Aes128Gcm(c) => raw(c),
            Self::Aes256Gcm(c) => raw(c),
            Self::Chacha20Poly1305(c) => raw(c),
        }
    }

    pub fn header(&self) -> Header {
        match self {
            Self::Aes128Gcm(c) => c.info,
            Self::Aes256Gcm(c) => c.info,
            Self::Chacha20Poly1305(c) => c.info,
        }
    }
}

impl Drop for CryptoInfo {
    /// Best effort: the keys do not outlive the `setsockopt` that copied them.
    fn drop(&mut self) {
        match self {
            Self::Aes128Gcm(c) => c.key.fill(0),
            Self::Aes256Gcm(c) => c.key.fill(0),
            Self::Chacha20Poly1305(c) => c.key.fill(0),
        }
    }
}

#[cfg(test)]
#[path = "crypto_info_tests.rs"]
pub(crate) mod tests;
