//! Frame headers (RFC 6455 §5.2) and masking. A header is parsed from the front of a byte
//! slice once it is complete; the payload is left where it is for the caller to copy out and
//! unmask, so that no frame needs its own allocation.

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    /// `None` for the reserved opcodes 3-7 and 0xB-0xF.
    pub fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    pub fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// The largest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
pub const MAX_HEADER: usize = 14;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    /// RSV1: "this message is compressed" under permessage-deflate.
    pub rsv1: bool,
    pub opcode: Opcode,
    pub mask: Option<[u8; 4]>,
    pub len: u64,
}

/// A header that breaks RFC 6455 §5.2/§5.5; every one closes the connection with 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("reserved bits RSV2/RSV3 set")]
    ReservedBits,
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("control frame fragmented or longer than 125 bytes")]
    BadControl,
    #[error("64-bit length with the most significant bit set")]
    BadLength,
}

/// Parses the header at the front of `buf`: `Ok(None)` until all of it has arrived, else the
/// header and its length in bytes. RSV1 is left for the caller (it depends on negotiation).
pub fn parse_header(buf: &[u8]) -> Result<Option<(Header, usize)>, HeaderError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x30 != 0 {
        return Err(HeaderError::ReservedBits);
    }
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(HeaderError::ReservedOpcode(b0 & 0x0F))?;
    let fin = b0 & 0x80 != 0;
    let short = u64::from(b1 & 0x7F);
    if opcode.is_control() && (!fin || short > MAX_CONTROL_PAYLOAD as u64) {
        return Err(HeaderError::BadControl);
    }
    let (len, mut at) = match short {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(b);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 {
                return Err(HeaderError::BadLength);
            }
            (len, 10)
        }
        n => (n, 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let Some(m) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    Ok(Some((
        Header {
            fin,
            rsv1: b0 & 0x40 != 0,
            opcode,
            mask,
            len,
        },
        at,
    )))
}

/// Appends a header; the server sends `mask: None`, a client must mask.
pub fn encode_header(
    out: &mut Vec<u8>,
    fin: bool,
    rsv1: bool,
    opcode: Opcode,
    len: usize,
    mask: Option<[u8; 4]>,
) {
    out.push(u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode.bits());
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(m | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

/// Appends a whole unmasked (server) frame.
pub fn encode_frame(out: &mut Vec<u8>, fin: bool, rsv1: bool, opcode: Opcode, payload: &[u8]) {
    encode_header(out, fin, rsv1, opcode, payload.len(), None);
    out.extend_from_slice(payload);
}

/// XORs `data` with the mask, where `data` starts `offset` bytes into the frame's payload (so
/// a payload can be unmasked in pieces). Masking twice restores the original.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = [0u8; 4];
    for (i, k) in key.iter_mut().enumerate() {
        *k = mask[(offset + i) % 4];
    }
    let word = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Parsed = Result<Option<(Header, usize)>, HeaderError>;

    #[test]
    fn header_table() {
        let cases: &[(&[u8], Parsed)] = &[
            (b"", Ok(None)),
            (b"\x81", Ok(None)),
            (b"\x81\x85\x01\x02\x03", Ok(None)),
            (
                b"\x81\x85\x01\x02\x03\x04",
                Ok(Some((
                    Header {
                        fin: true,
                        rsv1: false,
                        opcode: Opcode::Text,
                        mask: Some([1, 2, 3, 4]),
                        len: 5,
                    },
                    6,
                ))),
            ),
            (
                b"\x02\x7e\x01\x00",
                Ok(Some((
                    Header {
                        fin: false,
                        rsv1: false,
                        opcode: Opcode::Binary,
                        mask: None,
                        len: 256,
                    },
                    4,
                ))),
            ),
            (b"\x02\x7f\x00\x00\x00\x00\x00\x01\x00", Ok(None)),
            (
                b"\x02\x7f\x80\x00\x00\x00\x00\x00\x00\x00",
                Err(HeaderError::BadLength),
            ),
            (b"\xa1\x80", Err(HeaderError::ReservedBits)),
            (b"\x91\x80", Err(HeaderError::ReservedBits)),
            (b"\x83\x80", Err(HeaderError::ReservedOpcode(3))),
            (b"\x8b\x80", Err(HeaderError::ReservedOpcode(0xb))),
            (b"\x09\x80", Err(HeaderError::BadControl)),
            (b"\x89\xfe\x00\x7e", Err(HeaderError::BadControl)),
            (
                b"\xc1\x80\0\0\0\0",
                Ok(Some((
                    Header {
                        fin: true,
                        rsv1: true,
                        opcode: Opcode::Text,
                        mask: Some([0; 4]),
                        len: 0,
                    },
                    6,
                ))),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&parse_header(input), want, "{input:?}");
        }
    }

    proptest! {
        #[test]
        fn header_round_trip(fin: bool, rsv1: bool, op in 0usize..6, len in prop_oneof![0usize..130, 65_530usize..65_540, 70_000usize..80_000], mask: Option<[u8; 4]>) {
            let ops = [Opcode::Continuation, Opcode::Text, Opcode::Binary, Opcode::Close, Opcode::Ping, Opcode::Pong];
            let opcode = ops[op];
            let mut out = Vec::new();
            encode_header(&mut out, fin, rsv1, opcode, len, mask);
            let parsed = parse_header(&out);
            if opcode.is_control() && (!fin || len > MAX_CONTROL_PAYLOAD) {
                prop_assert_eq!(parsed, Err(HeaderError::BadControl));
            } else {
                prop_assert_eq!(parsed, Ok(Some((Header { fin, rsv1, opcode, mask, len: len as u64 }, out.len()))));
                for cut in 0..out.len() {
                    prop_assert_eq!(parse_header(&out[..cut]), Ok(None));
                }
            }
        }

        #[test]
        fn masking_in_pieces_equals_masking_whole(data: Vec<u8>, mask: [u8; 4], cut in 0usize..64) {
            let cut = cut.min(data.len());
            let mut whole = data.clone();
            apply_mask(&mut whole, mask, 0);
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(cut);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, cut);
            prop_assert_eq!(&whole, &pieces);
            for (i, (m, d)) in whole.iter().zip(&data).enumerate() {
                prop_assert_eq!(*m, d ^ mask[i % 4]);
            }
            apply_mask(&mut whole, mask, 0);
            prop_assert_eq!(whole, data);
        }
    }
}
