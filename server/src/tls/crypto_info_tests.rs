//! The kernel structs checked two ways, since this machine's kernel has no kTLS to take them:
//! their layout against `<linux/tls.h>` (gcc), and their contents by playing the kernel's
//! part with *ring*: records sealed from the TX struct alone must open in a real rustls
//! client, and records that client sends must open from the RX struct alone.

use std::sync::Arc;

use ring::aead;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::ring::{cipher_suite as cs, default_provider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, ServerConnection,
    SignatureScheme, SupportedCipherSuite,
};

use super::*;

// ---- layout against the C header ------------------------------------------------------

#[test]
fn layouts_match_linux_tls_h_compiled_by_gcc() {
    use std::mem::{offset_of, size_of};
    if !std::path::Path::new("/usr/include/linux/tls.h").exists() {
        eprintln!("skipped: /usr/include/linux/tls.h is absent (apt-get install linux-libc-dev)");
        return;
    }
    let c = r#"
#include <stdio.h>
#include <stddef.h>
#include <sys/socket.h>
#include <linux/tls.h>
#define S(t) printf(#t " size %zu\n", sizeof(struct t));
#define O(t, f) printf(#t "." #f " %zu\n", offsetof(struct t, f));
#define FIELDS(t) S(t) O(t, info) O(t, iv) O(t, key) O(t, salt) O(t, rec_seq)
#define K(k) printf(#k " %d\n", (int)(k));
int main(void) {
    S(tls_crypto_info) O(tls_crypto_info, version) O(tls_crypto_info, cipher_type)
    FIELDS(tls12_crypto_info_aes_gcm_128)
    FIELDS(tls12_crypto_info_aes_gcm_256)
    FIELDS(tls12_crypto_info_chacha20_poly1305)
    K(SOL_TLS) K(TLS_TX) K(TLS_RX) K(TLS_SET_RECORD_TYPE) K(TLS_1_2_VERSION) K(TLS_1_3_VERSION)
    K(TLS_CIPHER_AES_GCM_128) K(TLS_CIPHER_AES_GCM_256) K(TLS_CIPHER_CHACHA20_POLY1305)
    return 0;
}
"#;
    let dir = std::env::temp_dir().join(format!("uringapi-tls-h-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("layout.c"), c).unwrap();
    let built = std::process::Command::new("gcc")
        .args(["-o", "layout", "layout.c"])
        .current_dir(&dir)
        .output()
        .expect("gcc runs (it also builds ring)");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let ran = std::process::Command::new(dir.join("layout"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let from_c = String::from_utf8(ran.stdout).unwrap();

    let mut ours = String::new();
    let mut line = |name: &str, n: usize| ours.push_str(&format!("{name} {n}\n"));
    line("tls_crypto_info size", size_of::<Header>());
    line("tls_crypto_info.version", offset_of!(Header, version));
    line(
        "tls_crypto_info.cipher_type",
        offset_of!(Header, cipher_type),
    );
    macro_rules! fields {
        ($c:literal, $t:ty) => {
            line(concat!($c, " size"), size_of::<$t>());
            line(concat!($c, ".info"), offset_of!($t, info));
            line(concat!($c, ".iv"), offset_of!($t, iv));
            line(concat!($c, ".key"), offset_of!($t, key));
            line(concat!($c, ".salt"), offset_of!($t, salt));
            line(concat!($c, ".rec_seq"), offset_of!($t, rec_seq));
        };
    }
    fields!("tls12_crypto_info_aes_gcm_128", Aes128Gcm);
    fields!("tls12_crypto_info_aes_gcm_256", Aes256Gcm);
    fields!("tls12_crypto_info_chacha20_poly1305", Chacha20Poly1305);
    line("SOL_TLS", libc::SOL_TLS as usize);
    line("TLS_TX", TLS_TX as usize);
    line("TLS_RX", TLS_RX as usize);
    line("TLS_SET_RECORD_TYPE", TLS_SET_RECORD_TYPE as usize);
    line("TLS_1_2_VERSION", TLS_1_2_VERSION.into());
    line("TLS_1_3_VERSION", TLS_1_3_VERSION.into());
    line("TLS_CIPHER_AES_GCM_128", TLS_CIPHER_AES_GCM_128.into());
    line("TLS_CIPHER_AES_GCM_256", TLS_CIPHER_AES_GCM_256.into());
    line(
        "TLS_CIPHER_CHACHA20_POLY1305",
        TLS_CIPHER_CHACHA20_POLY1305.into(),
    );
    assert_eq!(ours, from_c);
}

// ---- a real handshake in memory ---------------------------------------------------------

/// The client checks nothing about the server: these tests are about the keys afterwards.
#[derive(Debug)]
pub(crate) struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ECDSA_NISTP256_SHA256]
    }
}

#[derive(Debug)]
pub(crate) struct Fixed(pub(crate) Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Moves records both ways until neither side has anything to send.
fn pump(client: &mut ClientConnection, server: &mut ServerConnection) {
    loop {
        let mut moved = false;
        while client.wants_write() {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            feed(&wire, |r| server.read_tls(r));
            server.process_new_packets().unwrap();
            moved = true;
        }
        while server.wants_write() {
            let mut wire = Vec::new();
            server.write_tls(&mut wire).unwrap();
            feed(&wire, |r| client.read_tls(r));
            client.process_new_packets().unwrap();
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

fn feed(mut wire: &[u8], mut read: impl FnMut(&mut &[u8]) -> std::io::Result<usize>) {
    while !wire.is_empty() {
        read(&mut wire).unwrap();
    }
}

/// A server config (a fresh P-256 key, a certificate nobody parses, secret extraction on)
/// and a client config that trusts it, both limited to one suite.
pub(crate) fn configs(suite: SupportedCipherSuite) -> (ServerConfig, ClientConfig) {
    let mut provider = default_provider();
    provider.cipher_suites = vec![suite];
    let provider = Arc::new(provider);
    let versions = [suite.version()];
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rng,
    )
    .unwrap();
    let key = PrivateKeyDer::Pkcs8(pkcs8.as_ref().to_vec().into());
    let signer = provider.key_provider.load_private_key(key).unwrap();
    // The client never parses it (AnyServer).
    let chain = vec![CertificateDer::from(b"not parsed".to_vec())];
    let mut server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(Arc::new(CertifiedKey::new(chain, signer)))));
    server_config.enable_secret_extraction = true;
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_no_client_auth();
    (server_config, client_config)
}

/// A finished handshake over one suite, the server ready to give its secrets up.
fn handshake(suite: SupportedCipherSuite) -> (ClientConnection, ServerConnection) {
    let (server_config, client_config) = configs(suite);
    let mut client =
        ClientConnection::new(Arc::new(client_config), "localhost".try_into().unwrap()).unwrap();
    let mut server = ServerConnection::new(Arc::new(server_config)).unwrap();
    pump(&mut client, &mut server);
    assert!(!client.is_handshaking() && !server.is_handshaking());
    // Application data through rustls first, so the record numbers are past zero.
    use std::io::Write;
    client
        .writer()
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    server.writer().write_all(b"HTTP/1.1 204 \r\n\r\n").unwrap();
    pump(&mut client, &mut server);
    let mut got = vec![0; 64];
    let n = std::io::Read::read(&mut server.reader(), &mut got).unwrap();
    assert_eq!(&got[..n], b"GET / HTTP/1.1\r\n\r\n");
    let n = std::io::Read::read(&mut client.reader(), &mut got).unwrap();
    assert_eq!(&got[..n], b"HTTP/1.1 204 \r\n\r\n");
    (client, server)
}

// ---- the kernel's record layer, played with ring ------------------------------------------

/// What the kernel reads out of one struct, and the record number it keeps per direction.
pub(crate) struct Kernel {
    alg: &'static aead::Algorithm,
    key: Vec<u8>,
    salt: Vec<u8>,
    iv: Vec<u8>,
    seq: u64,
    /// Records done since the struct was installed.
    done: u64,
    tls13: bool,
}

impl Kernel {
    pub(crate) fn from(info: &CryptoInfo) -> Self {
        let (alg, key, salt, iv, rec_seq, version): (_, &[u8], &[u8], &[u8], _, _) = match info {
            CryptoInfo::Aes128Gcm(c) => (
                &aead::AES_128_GCM,
                &c.key,
                &c.salt,
                &c.iv,
                c.rec_seq,
                c.info.version,
            ),
            CryptoInfo::Aes256Gcm(c) => (
                &aead::AES_256_GCM,
                &c.key,
                &c.salt,
                &c.iv,
                c.rec_seq,
                c.info.version,
            ),
            CryptoInfo::Chacha20Poly1305(c) => (
                &aead::CHACHA20_POLY1305,
                &c.key,
                &c.salt,
                &c.iv,
                c.rec_seq,
                c.info.version,
            ),
        };
        Self {
            alg,
            key: key.to_vec(),
            salt: salt.to_vec(),
            iv: iv.to_vec(),
            seq: u64::from_be_bytes(rec_seq),
            done: 0,
            tls13: version == TLS_1_3_VERSION,
        }
    }

    fn key(&self) -> aead::LessSafeKey {
        aead::LessSafeKey::new(aead::UnboundKey::new(self.alg, &self.key).unwrap())
    }

    /// TLS 1.3 and ChaCha20: salt‖iv with the record number XORed into its last 8 bytes.
    fn xor_nonce(&self) -> aead::Nonce {
        let mut n = [0u8; 12];
        n[..self.salt.len()].copy_from_slice(&self.salt);
        n[self.salt.len()..].copy_from_slice(&self.iv);
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        aead::Nonce::assume_unique_for_key(n)
    }

    /// TLS 1.2 AES-GCM: salt‖explicit nonce, the explicit part sent in the record.
    fn salted(&self, explicit: [u8; 8]) -> aead::Nonce {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.salt);
        n[4..].copy_from_slice(&explicit);
        aead::Nonce::assume_unique_for_key(n)
    }

    fn explicit_nonce(&self) -> bool {
        !self.tls13 && !std::ptr::eq(self.alg, &aead::CHACHA20_POLY1305)
    }

    fn tls12_aad(&self, len: usize) -> aead::Aad<Vec<u8>> {
        let mut aad = self.seq.to_be_bytes().to_vec();
        aad.extend_from_slice(&[0x17, 3, 3]);
        aad.extend_from_slice(&(len as u16).to_be_bytes());
        aead::Aad::from(aad)
    }

    /// One application-data record, as TLS_TX writes it.
    pub(crate) fn seal(&mut self, data: &[u8]) -> Vec<u8> {
        let key = self.key();
        let mut body = data.to_vec();
        let mut record = vec![0x17, 3, 3];
        if self.tls13 {
            body.push(0x17);
            record.extend_from_slice(&((body.len() + 16) as u16).to_be_bytes());
            let aad = aead::Aad::from(record.clone());
            key.seal_in_place_append_tag(self.xor_nonce(), aad, &mut body)
                .unwrap();
        } else if self.explicit_nonce() {
            // The kernel sends its running `iv`: the struct's, plus one per record.
            let iv = u64::from_be_bytes(self.iv.clone().try_into().unwrap());
            let explicit = (iv + self.done).to_be_bytes();
            let aad = self.tls12_aad(data.len());
            key.seal_in_place_append_tag(self.salted(explicit), aad, &mut body)
                .unwrap();
            record.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
            record.extend_from_slice(&explicit);
        } else {
            let aad = self.tls12_aad(data.len());
            key.seal_in_place_append_tag(self.xor_nonce(), aad, &mut body)
                .unwrap();
            record.extend_from_slice(&(body.len() as u16).to_be_bytes());
        }
        record.extend_from_slice(&body);
        self.seq += 1;
        self.done += 1;
        record
    }

    /// One application-data record read by TLS_RX; `None` if it does not authenticate.
    pub(crate) fn open(&mut self, record: &[u8]) -> Option<Vec<u8>> {
        let key = self.key();
        let (header, rest) = record.split_at(5);
        assert_eq!(header[0], 0x17, "an application-data record");
        assert_eq!(
            usize::from(u16::from_be_bytes([header[3], header[4]])),
            rest.len()
        );
        let plain = if self.tls13 {
            let mut body = rest.to_vec();
            let aad = aead::Aad::from(header.to_vec());
            let n = key
                .open_in_place(self.xor_nonce(), aad, &mut body)
                .ok()?
                .len();
            body.truncate(n);
            // Inner plaintext: data, content type, zero padding.
            while body.last() == Some(&0) {
                body.pop();
            }
            assert_eq!(body.pop(), Some(0x17));
            body
        } else if self.explicit_nonce() {
            let (explicit, sealed) = rest.split_at(8);
            let mut body = sealed.to_vec();
            let aad = self.tls12_aad(sealed.len() - 16);
            let nonce = self.salted(explicit.try_into().unwrap());
            let n = key.open_in_place(nonce, aad, &mut body).ok()?.len();
            body.truncate(n);
            body
        } else {
            let mut body = rest.to_vec();
            let aad = self.tls12_aad(rest.len() - 16);
            let n = key
                .open_in_place(self.xor_nonce(), aad, &mut body)
                .ok()?
                .len();
            body.truncate(n);
            body
        };
        self.seq += 1;
        self.done += 1;
        Some(plain)
    }
}

pub(crate) fn suites() -> [(SupportedCipherSuite, u16); 6] {
    [
        (cs::TLS13_AES_128_GCM_SHA256, TLS_CIPHER_AES_GCM_128),
        (cs::TLS13_AES_256_GCM_SHA384, TLS_CIPHER_AES_GCM_256),
        (
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            TLS_CIPHER_CHACHA20_POLY1305,
        ),
        (
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_CIPHER_AES_GCM_128,
        ),
        (
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_CIPHER_AES_GCM_256,
        ),
        (
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            TLS_CIPHER_CHACHA20_POLY1305,
        ),
    ]
}

/// Server and client secrets of one connection, both directions, as the kernel gets them.
fn infos(
    suite: SupportedCipherSuite,
) -> (
    ClientConnection,
    CryptoInfo,
    CryptoInfo,
    rustls::ExtractedSecrets,
) {
    let (client, server) = handshake(suite);
    let version = server.protocol_version().unwrap();
    let secrets = server.dangerous_extract_secrets().unwrap();
    let tx = CryptoInfo::new(version, secrets.tx.0, &secrets.tx.1).unwrap();
    let rx = CryptoInfo::new(version, secrets.rx.0, &secrets.rx.1).unwrap();
    (client, tx, rx, secrets)
}

fn key_iv(s: &ConnectionTrafficSecrets) -> (&[u8], &[u8]) {
    match s {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key.as_ref(), iv.as_ref()),
        _ => unreachable!("ring has no other AEAD"),
    }
}

#[test]
fn key_iv_salt_and_seq_sit_where_the_kernel_reads_them() {
    for (suite, cipher) in suites() {
        let name = format!("{:?}", suite.suite());
        let (_, tx, rx, secrets) = infos(suite);
        let version = if name.starts_with("TLS13") {
            TLS_1_3_VERSION
        } else {
            TLS_1_2_VERSION
        };
        for (info, (seq, s)) in [(&tx, &secrets.tx), (&rx, &secrets.rx)] {
            assert!(
                *seq > 0,
                "{name}: application data went through rustls first"
            );
            let (key, iv) = key_iv(s);
            let h = info.header();
            assert_eq!((h.version, h.cipher_type), (version, cipher), "{name}");
            let (k, salt, civ, rec_seq): (&[u8], &[u8], &[u8], [u8; 8]) = match info {
                CryptoInfo::Aes128Gcm(c) => (&c.key, &c.salt, &c.iv, c.rec_seq),
                CryptoInfo::Aes256Gcm(c) => (&c.key, &c.salt, &c.iv, c.rec_seq),
                CryptoInfo::Chacha20Poly1305(c) => (&c.key, &c.salt, &c.iv, c.rec_seq),
            };
            assert_eq!(k, key, "{name}");
            assert_eq!(
                [salt, civ].concat(),
                iv,
                "{name}: salt then iv make rustls's 12-byte IV"
            );
            assert_eq!(
                salt.len(),
                if cipher == TLS_CIPHER_CHACHA20_POLY1305 {
                    0
                } else {
                    4
                }
            );
            assert_eq!(rec_seq, seq.to_be_bytes(), "{name}");
        }
        // The pointer and length setsockopt gets.
        let (ptr, len) = tx.as_option();
        let want = match &tx {
            CryptoInfo::Aes128Gcm(c) => (std::ptr::from_ref(c).cast(), 40),
            CryptoInfo::Aes256Gcm(c) => (std::ptr::from_ref(c).cast(), 56),
            CryptoInfo::Chacha20Poly1305(c) => (std::ptr::from_ref(c).cast(), 56),
        };
        assert_eq!((ptr, len), want, "{name}");
    }
}

#[test]
fn records_sealed_from_the_tx_struct_open_in_a_rustls_client_and_back() {
    use std::io::{Read, Write};
    for (suite, _) in suites() {
        let name = format!("{:?}", suite.suite());
        let (mut client, tx, rx, _) = infos(suite);
        let (mut ktx, mut krx) = (Kernel::from(&tx), Kernel::from(&rx));
        // Server → client: two records, so the record number (and TLS 1.2's explicit
        // nonce) must advance as the kernel advances them.
        for body in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"[..],
            b"second",
        ] {
            let record = ktx.seal(body);
            feed(&record, |r| client.read_tls(r));
            let state = client
                .process_new_packets()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut got = vec![0; state.plaintext_bytes_to_read()];
            client.reader().read_exact(&mut got).unwrap();
            assert_eq!(got, body, "{name}");
        }
        // Client → server: what rustls sends opens with the RX struct alone.
        for body in [&b"POST / HTTP/1.1\r\n\r\n"[..], b"more"] {
            client.writer().write_all(body).unwrap();
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            assert_eq!(krx.open(&wire).as_deref(), Some(body), "{name}");
        }
        // A wrong record number is refused, so the checks above could fail.
        let mut late = Kernel::from(&rx);
        late.seq += 7;
        client.writer().write_all(b"x").unwrap();
        let mut wire = Vec::new();
        client.write_tls(&mut wire).unwrap();
        assert_eq!(late.open(&wire), None, "{name}");
    }
}

#[test]
fn only_tls12_and_13_are_taken() {
    let (_, server) = handshake(cs::TLS13_AES_128_GCM_SHA256);
    let secrets = server.dangerous_extract_secrets().unwrap();
    let refused = CryptoInfo::new(ProtocolVersion::TLSv1_1, 0, &secrets.tx.1).err();
    assert_eq!(
        refused,
        Some(Unsupported::Version(ProtocolVersion::TLSv1_1))
    );
}
