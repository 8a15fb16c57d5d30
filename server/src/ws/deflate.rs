//! permessage-deflate (RFC 7692): negotiating the extension from the client's offers, and
//! compressing/inflating whole messages with raw DEFLATE (flate2 on its zlib-rs backend).
//!
//! Window sizes: zlib-rs honours window bits 9 to 15 (zlib's raw DEFLATE has no 8-bit
//! window). An offer's `server_max_window_bits=N` (9..=15) is agreed and our compressor uses
//! an N-bit window; 8 declines that offer (§7.1.2.1: the next one is tried). An offer's
//! `client_max_window_bits=N` is answered with the same N and our inflater uses an N-bit
//! window (9 for 8: a larger window inflates anything a smaller one produced); without a
//! value it is left out of the answer and we inflate with 15 bits. A smaller window is
//! less memory per WebSocket: 4 × 2^N bytes of window and chains for the compressor (plus
//! 128 KiB of hash and pending buffers), 2^N for the inflater (plus about 7 KiB). Both
//! `*_no_context_takeover` parameters are honoured.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The tail that every deflated message ends with and that the wire form drops (§7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The largest (and default) window: 32 KiB.
const MAX_WINDOW_BITS: u8 = 15;
/// The smallest window zlib's raw DEFLATE supports.
const MIN_WINDOW_BITS: u8 = 9;

/// The negotiated parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Agreed {
    /// We reset our compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message (so may we our inflater).
    pub client_no_context_takeover: bool,
    /// Our compressor's window, when the client limited it (9..=15).
    pub server_max_window_bits: Option<u8>,
    /// The client's window, when it offered a limit (8..=15); answered as it came.
    pub client_max_window_bits: Option<u8>,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the 101 answer.
    pub fn response_value(self) -> String {
        let mut v = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            v.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            v.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            v.push_str(&format!("; server_max_window_bits={bits}"));
        }
        if let Some(bits) = self.client_max_window_bits {
            v.push_str(&format!("; client_max_window_bits={bits}"));
        }
        v
    }

    /// Our compressor's window bits.
    fn deflate_bits(self) -> u8 {
        self.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS)
    }

    /// Our inflater's window bits: at least what the client may use.
    fn inflate_bits(self) -> u8 {
        self.client_max_window_bits
            .unwrap_or(MAX_WINDOW_BITS)
            .max(MIN_WINDOW_BITS)
    }
}

fn window_bits(value: Option<&str>) -> Option<u8> {
    let v = value?.trim_matches('"');
    let bits: u8 = v.parse().ok().filter(|_| !v.starts_with('0'))?;
    (8..=15).contains(&bits).then_some(bits)
}

/// One offer's parameters, or `None` when the offer is malformed or asks for what we cannot do.
fn accept_offer<'a>(params: impl Iterator<Item = &'a str>) -> Option<Agreed> {
    let mut agreed = Agreed::default();
    let mut seen = [false; 4];
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (param.trim(), None),
        };
        let slot = match name {
            "server_no_context_takeover" if value.is_none() => {
                agreed.server_no_context_takeover = true;
                0
            }
            "client_no_context_takeover" if value.is_none() => {
                agreed.client_no_context_takeover = true;
                1
            }
            "server_max_window_bits" => {
                let bits = window_bits(value)?;
                if bits < MIN_WINDOW_BITS {
                    return None; // zlib's raw DEFLATE cannot compress with 256 bytes
                }
                agreed.server_max_window_bits = Some(bits);
                2
            }
            "client_max_window_bits" => {
                if value.is_some() {
                    agreed.client_max_window_bits = Some(window_bits(value)?);
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
    }
    Some(agreed)
}

/// Picks the first acceptable permessage-deflate offer among the client's
/// `Sec-WebSocket-Extensions` values; `None` when there is none (no compression).
pub fn negotiate(values: &[&str]) -> Option<Agreed> {
    values.iter().flat_map(|v| v.split(',')).find_map(|offer| {
        let mut parts = offer.split(';');
        let name = parts.next()?.trim();
        if name == "permessage-deflate" {
            accept_offer(parts.filter(|p| !p.trim().is_empty()))
        } else {
            None
        }
    })
}

/// Compresses outgoing messages.
pub struct Deflater {
    inner: Compress,
    no_context_takeover: bool,
}

impl Deflater {
    pub fn new(agreed: Agreed) -> Self {
        Self {
            inner: Compress::new_with_window_bits(
                Compression::fast(),
                false,
                agreed.deflate_bits(),
            ),
            no_context_takeover: agreed.server_no_context_takeover,
        }
    }

    /// Appends the compressed form of a whole message to `out` (the payload of a frame with
    /// RSV1 set).
    pub fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        self.compress_piece(message, true, out);
    }

    /// Appends the compressed form of one piece of a message to `out`: the payload of one
    /// of its frames (RSV1 on the first only, §6.1). Every piece ends on a sync flush, so
    /// the frame can go out at once; only the `last` drops the flush's tail (§7.2.1), the
    /// others keep it as an empty stored block the peer inflates past.
    pub fn compress_piece(&mut self, piece: &[u8], last: bool, out: &mut Vec<u8>) {
        let start = out.len();
        let mut input = piece;
        loop {
            out.reserve(input.len() / 2 + 64);
            let before = self.inner.total_in();
            // Errors only on a misuse of the stream state, which this loop never makes.
            let status = self.inner.compress_vec(input, out, FlushCompress::Sync);
            input = &input[(self.inner.total_in() - before) as usize..];
            // A sync flush is complete when it returns with room to spare.
            if input.is_empty() && out.len() < out.capacity() || status.is_err() {
                break;
            }
        }
        if out.len() == start {
            // zlib refuses a sync flush right after another with no input in between
            // (Z_BUF_ERROR) and writes nothing, so an empty piece would go out empty; the
            // peer then reads the tail it appends as the start of a stored block and the
            // next message as its length: corrupt. The previous flush left the stream on a
            // byte boundary, so the empty stored block is written here instead (after the
            // tail is dropped: the single 0x00 of RFC 7692 §7.2.3.6).
            out.extend_from_slice(&[0x00]);
            out.extend_from_slice(&TAIL);
        }
        if !last {
            return;
        }
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.no_context_takeover {
            self.inner.reset();
        }
    }
}

/// A compressed message that inflates to more than the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("message inflates past the size limit")]
    TooBig,
    #[error("invalid DEFLATE data")]
    Corrupt,
}

/// Inflates incoming messages.
pub struct Inflater {
    inner: Decompress,
    no_context_takeover: bool,
}

impl Inflater {
    pub fn new(agreed: Agreed) -> Self {
        Self {
            inner: Decompress::new_with_window_bits(false, agreed.inflate_bits()),
            no_context_takeover: agreed.client_no_context_takeover,
        }
    }

    /// Inflates one fragment of a compressed message, appending to `out`; more than `limit`
    /// bytes of output is an error.
    pub fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        loop {
            // Vec's growth may reserve more than asked: the output can pass the limit by at
            // most what was already there before the limit check stops it.
            out.reserve((input.len() * 4).clamp(256, 1 << 16));
            let (in_before, out_before) = (self.inner.total_in(), self.inner.total_out());
            let status = self
                .inner
                .decompress_vec(input, out, FlushDecompress::None)
                .map_err(|_| InflateError::Corrupt)?;
            input = &input[(self.inner.total_in() - in_before) as usize..];
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                return if input.is_empty() {
                    Ok(())
                } else {
                    Err(InflateError::Corrupt)
                };
            }
            // The backend may stop with output space left while it still holds output (it
            // drains its window in pieces): done only when a call moves nothing.
            if self.inner.total_in() == in_before && self.inner.total_out() == out_before {
                return Ok(());
            }
        }
    }

    /// Ends a message: feeds the dropped tail and flushes the rest of the output.
    pub fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        self.inflate(&TAIL, out, limit)?;
        if self.no_context_takeover {
            self.inner.reset(false);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_table() {
        let plain = Agreed::default();
        let snct = Agreed {
            server_no_context_takeover: true,
            ..plain
        };
        let cnct = Agreed {
            client_no_context_takeover: true,
            ..plain
        };
        let cases: &[(&[&str], Option<Agreed>)] = &[
            (&[], None),
            (&["x-webkit-deflate-frame"], None),
            (&["permessage-deflate"], Some(plain)),
            (&["permessage-deflate; client_max_window_bits"], Some(plain)),
            (
                &["permessage-deflate; client_max_window_bits=10"],
                Some(Agreed {
                    client_max_window_bits: Some(10),
                    ..plain
                }),
            ),
            (
                &["permessage-deflate; client_max_window_bits=\"12\""],
                Some(Agreed {
                    client_max_window_bits: Some(12),
                    ..plain
                }),
            ),
            (
                &["permessage-deflate; client_max_window_bits=8"],
                Some(Agreed {
                    client_max_window_bits: Some(8),
                    ..plain
                }),
            ),
            (&["permessage-deflate; client_max_window_bits=16"], None),
            (
                &["permessage-deflate; server_max_window_bits=15"],
                Some(Agreed {
                    server_max_window_bits: Some(15),
                    ..plain
                }),
            ),
            (
                &["permessage-deflate; server_max_window_bits=8, permessage-deflate"],
                Some(plain),
            ),
            (
                &["permessage-deflate; server_max_window_bits=9"],
                Some(Agreed {
                    server_max_window_bits: Some(9),
                    ..plain
                }),
            ),
            (&["permessage-deflate; server_max_window_bits=8"], None),
            (&["permessage-deflate; server_max_window_bits=16"], None),
            (&["permessage-deflate; server_max_window_bits"], None),
            (
                &["permessage-deflate; server_no_context_takeover"],
                Some(snct),
            ),
            (
                &["permessage-deflate;client_no_context_takeover"],
                Some(cnct),
            ),
            (&["permessage-deflate; server_no_context_takeover=1"], None),
            (
                &["permessage-deflate; client_no_context_takeover; client_no_context_takeover"],
                None,
            ),
            (&["permessage-deflate; mystery"], None),
            (
                &["foo", "permessage-deflate; server_no_context_takeover"],
                Some(snct),
            ),
        ];
        for (offers, want) in cases {
            assert_eq!(&negotiate(offers), want, "{offers:?}");
        }
        assert_eq!(
            Agreed {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: Some(10),
                client_max_window_bits: Some(8),
            }
            .response_value(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=8"
        );
    }

    #[test]
    fn rfc_7692_example_inflates_to_hello() {
        // §7.2.3.1: "Hello" compressed.
        let mut inf = Inflater::new(Agreed::default());
        let mut out = Vec::new();
        inf.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], &mut out, 100)
            .unwrap();
        inf.finish(&mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn round_trip_with_and_without_context_takeover() {
        let mut cases = vec![Agreed::default()];
        for bits in 9..=15 {
            for takeover in [false, true] {
                cases.push(Agreed {
                    server_no_context_takeover: takeover,
                    client_no_context_takeover: takeover,
                    server_max_window_bits: Some(bits),
                    client_max_window_bits: Some(bits),
                });
            }
        }
        for agreed in cases {
            let mut def = Deflater::new(agreed);
            // The inflater here plays the peer of our deflater: it must keep context exactly
            // when the deflater does, with the window the deflater uses.
            let mut inf = Inflater::new(Agreed {
                client_no_context_takeover: agreed.server_no_context_takeover,
                client_max_window_bits: agreed.server_max_window_bits,
                ..agreed
            });
            let big: Vec<u8> = (0..300_000u32)
                .map(|i| (i % 251) as u8 ^ (i / 7) as u8)
                .collect();
            for msg in [&b"Hello"[..], b"Hello", b"", &big] {
                let mut wire = Vec::new();
                def.compress(msg, &mut wire);
                assert!(!wire.ends_with(&TAIL));
                if msg.is_empty() {
                    // RFC 7692 §7.2.3.6; zlib writes nothing for it after a sync flush.
                    assert_eq!(wire, [0x00], "{agreed:?}");
                }
                let mut out = Vec::new();
                // Fragmented arbitrarily on the way.
                for piece in wire.chunks(777) {
                    inf.inflate(piece, &mut out, usize::MAX).unwrap();
                }
                inf.finish(&mut out, usize::MAX).unwrap();
                assert!(
                    out == msg,
                    "{agreed:?}: {} bytes back of {}",
                    out.len(),
                    msg.len()
                );
            }
        }
    }

    /// A compressor limited to N window bits never refers further back than 2^N bytes: an
    /// inflater with exactly that window reads its output, and a repeat just past the
    /// window is not found (the output is larger than with a wide window).
    #[test]
    fn a_small_window_is_honoured() {
        let block: Vec<u8> = (0..600u32).map(|i| (i * 7919 % 251) as u8).collect();
        let msg = [&block[..], &block[..]].concat(); // repeats at distance 600 > 512
        let size = |bits: u8| {
            let agreed = Agreed {
                server_max_window_bits: Some(bits),
                ..Agreed::default()
            };
            let mut wire = Vec::new();
            Deflater::new(agreed).compress(&msg, &mut wire);
            let mut inf = Inflater::new(Agreed {
                client_max_window_bits: Some(bits),
                ..Agreed::default()
            });
            let mut out = Vec::new();
            inf.inflate(&wire, &mut out, usize::MAX).unwrap();
            inf.finish(&mut out, usize::MAX).unwrap();
            assert_eq!(out, msg, "{bits} bits");
            wire.len()
        };
        assert!(
            size(9) > size(10) + 300,
            "9 bits: {}, 10 bits: {}",
            size(9),
            size(10)
        );
    }

    #[test]
    fn a_compression_bomb_stops_at_the_limit() {
        let mut def = Deflater::new(Agreed::default());
        let mut wire = Vec::new();
        def.compress(&vec![0u8; 10 << 20], &mut wire);
        assert!(wire.len() < 200_000, "{}", wire.len());
        let mut inf = Inflater::new(Agreed::default());
        let mut out = Vec::new();
        let got = inf
            .inflate(&wire, &mut out, 1 << 20)
            .and_then(|_| inf.finish(&mut out, 1 << 20));
        assert_eq!(got, Err(InflateError::TooBig));
        assert!(out.len() <= 2 << 20);
    }
}
