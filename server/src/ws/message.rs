//! Frames in, messages and control events out: the receiving half of a server-side
//! WebSocket, with every check of RFC 6455 §5 and RFC 7692 §6. A violation names the close
//! code to answer with; nothing that breaks the protocol is ever returned as data.

use super::close::{self, BadClose};
use super::deflate::{Agreed, InflateError, Inflater};
use super::frame::{self, apply_mask, HeaderError, Opcode};
use super::utf8::Utf8Validator;

/// What the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole data message; `text` ones are valid UTF-8.
    Message {
        text: bool,
        data: Vec<u8>,
    },
    /// To be answered with a pong carrying the same payload.
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame: its code and reason, or `None` when it had no payload.
    Close(Option<(u16, String)>),
}

/// What [`Reader::read_in_place`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Event(Option<Event>),
    /// A whole data message, one frame, unmasked where it lies: `input[at]` (text ones are
    /// valid UTF-8).
    InPlace {
        text: bool,
        at: std::ops::Range<usize>,
    },
}

/// A client message on its way to the worker (the front end's WebSocket loop): assembled
/// in a buffer of its own, or unmasked in place in the read buffer at `at`, whose first
/// `used` bytes (its frame) are consumed once it is handed on (the socket is not read
/// meanwhile: the buffer stays put).
pub enum Held {
    Owned(Vec<u8>),
    InBuf {
        at: std::ops::Range<usize>,
        used: usize,
    },
}

impl Held {
    pub fn byte_len(&self) -> usize {
        match self {
            Held::Owned(v) => v.len(),
            Held::InBuf { at, .. } => at.len(),
        }
    }
}

/// A protocol violation: close with `code`; `reason` is for the debug log and the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

const fn protocol(reason: &'static str) -> Violation {
    Violation {
        code: close::PROTOCOL_ERROR,
        reason,
    }
}

const BAD_UTF8: Violation = Violation {
    code: close::INVALID_DATA,
    reason: "invalid UTF-8 in text message",
};
const TOO_BIG: Violation = Violation {
    code: close::TOO_BIG,
    reason: "message too big",
};

struct Partial {
    text: bool,
    compressed: bool,
    /// The message so far (inflated when compressed).
    data: Vec<u8>,
    /// Compressed bytes received so far, counted against the limit too.
    wire_len: usize,
    utf8: Utf8Validator,
}

/// The receiving state of one connection.
pub struct Reader {
    max_size: usize,
    /// The negotiated permessage-deflate, if any.
    deflate: Option<Agreed>,
    /// Made at the first compressed message: an idle WebSocket holds no inflate state
    /// (about 7 KiB and the window). Boxed: inline, its stream state would size every
    /// WebSocket's connection task, with deflate or without.
    inflater: Option<Box<Inflater>>,
    partial: Option<Partial>,
    scratch: Vec<u8>,
}

impl Reader {
    /// `max_size` bounds a message's length (after inflating); `deflate` is the negotiated
    /// permessage-deflate, if any.
    pub fn new(max_size: usize, deflate: Option<Agreed>) -> Self {
        Self {
            max_size,
            deflate,
            inflater: None,
            partial: None,
            scratch: Vec::new(),
        }
    }

    /// As [`read`](Self::read), but a message that is one whole uncompressed frame is unmasked
    /// where it lies in `input` and returned as [`Read::InPlace`]: its bytes stay in the
    /// caller's buffer (no allocation, no copy) until it has handed them on. Every other frame
    /// goes through `read`, with the same checks.
    pub fn read_in_place(&mut self, input: &mut [u8]) -> Result<(usize, Read), Violation> {
        if self.partial.is_none() {
            if let Ok(Some((h, at))) = frame::parse_header(input) {
                let single = h.fin
                    && !h.rsv1
                    && matches!(h.opcode, Opcode::Text | Opcode::Binary)
                    && h.len <= self.max_size as u64;
                if let (true, Some(mask)) = (single, h.mask) {
                    // Fits in usize: bounded by max_size.
                    let end = at + h.len as usize;
                    let Some(payload) = input.get_mut(at..end) else {
                        return Ok((0, Read::Event(None)));
                    };
                    apply_mask(payload, mask, 0);
                    let text = h.opcode == Opcode::Text;
                    if text && std::str::from_utf8(payload).is_err() {
                        return Err(BAD_UTF8);
                    }
                    return Ok((end, Read::InPlace { text, at: at..end }));
                }
            }
        }
        let (used, event) = self.read(input)?;
        Ok((used, Read::Event(event)))
    }

    /// Reads at most one frame from the front of `input`: the bytes it used (0 while the frame
    /// is incomplete) and the event it completed, if any.
    pub fn read(&mut self, input: &[u8]) -> Result<(usize, Option<Event>), Violation> {
        let (header, at) = match frame::parse_header(input) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok((0, None)),
            Err(HeaderError::ReservedBits) => return Err(protocol("reserved bits set")),
            Err(HeaderError::ReservedOpcode(_)) => return Err(protocol("reserved opcode")),
            Err(HeaderError::BadControl) => {
                return Err(protocol("control frame too long or fragmented"))
            }
            Err(HeaderError::BadLength) => return Err(protocol("bad frame length")),
        };
        let Some(mask) = header.mask else {
            return Err(protocol("unmasked client frame"));
        };
        let opcode = header.opcode;
        if header.rsv1
            && (self.deflate.is_none() || !matches!(opcode, Opcode::Text | Opcode::Binary))
        {
            return Err(protocol("RSV1 set without a compressed message"));
        }
        match (opcode, &self.partial) {
            (Opcode::Continuation, None) => return Err(protocol("continuation without a message")),
            (Opcode::Text | Opcode::Binary, Some(_)) => {
                return Err(protocol("new message inside a fragmented one"))
            }
            _ => {}
        }
        if !opcode.is_control() {
            let so_far = self
                .partial
                .as_ref()
                .map_or(0, |p| p.data.len().max(p.wire_len));
            if header.len > (self.max_size - so_far.min(self.max_size)) as u64 {
                return Err(TOO_BIG);
            }
        }
        // Fits in usize: bounded by max_size or by 125 above.
        let len = header.len as usize;
        let Some(payload) = input.get(at..at + len) else {
            return Ok((0, None));
        };
        let used = at + len;

        if opcode.is_control() {
            let mut data = payload.to_vec();
            apply_mask(&mut data, mask, 0);
            let event = match opcode {
                Opcode::Ping => Event::Ping(data),
                Opcode::Pong => Event::Pong(data),
                _ => match close::parse(&data) {
                    Ok(c) => Event::Close(c.map(|(code, reason)| (code, reason.to_owned()))),
                    Err(BadClose::Protocol) => return Err(protocol("bad close payload")),
                    Err(BadClose::Utf8) => return Err(BAD_UTF8),
                },
            };
            return Ok((used, Some(event)));
        }

        let partial = self.partial.get_or_insert_with(|| Partial {
            text: opcode == Opcode::Text,
            compressed: header.rsv1,
            data: Vec::new(),
            wire_len: 0,
            utf8: Utf8Validator::new(),
        });
        let start = partial.data.len();
        if partial.compressed {
            self.scratch.clear();
            self.scratch.extend_from_slice(payload);
            apply_mask(&mut self.scratch, mask, 0);
            partial.wire_len += len;
            // Set whenever `compressed` is (RSV1 is refused without it).
            let agreed = self.deflate.ok_or(protocol("compressed without deflate"))?;
            let inflater = self
                .inflater
                .get_or_insert_with(|| Box::new(Inflater::new(agreed)));
            let limit = self.max_size;
            let inflated = inflater
                .inflate(&self.scratch, &mut partial.data, limit)
                .and_then(|_| {
                    if header.fin {
                        inflater.finish(&mut partial.data, limit)
                    } else {
                        Ok(())
                    }
                });
            match inflated {
                Ok(()) => {}
                Err(InflateError::TooBig) => return Err(TOO_BIG),
                Err(InflateError::Corrupt) => return Err(protocol("invalid compressed data")),
            }
        } else {
            partial.data.extend_from_slice(payload);
            apply_mask(&mut partial.data[start..], mask, 0);
        }
        if partial.text {
            partial
                .utf8
                .feed(&partial.data[start..])
                .map_err(|_| BAD_UTF8)?;
        }
        if !header.fin {
            return Ok((used, None));
        }
        let mut done = self.partial.take().ok_or(protocol("message state lost"))?;
        if done.text {
            done.utf8.finish().map_err(|_| BAD_UTF8)?;
        }
        Ok((
            used,
            Some(Event::Message {
                text: done.text,
                data: done.data,
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::deflate::Deflater;
    use super::*;
    use proptest::prelude::*;

    fn client_frame(
        out: &mut Vec<u8>,
        fin: bool,
        rsv1: bool,
        opcode: Opcode,
        payload: &[u8],
        mask: [u8; 4],
    ) {
        frame::encode_header(out, fin, rsv1, opcode, payload.len(), Some(mask));
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], mask, 0);
    }

    /// Feeds `wire` in pieces of `step` bytes, as a socket would deliver it, through
    /// `read_in_place` (the front end's way; it falls back on `read`), so that every table
    /// below checks both paths.
    fn read_all(reader: &mut Reader, wire: &[u8], step: usize) -> Result<Vec<Event>, Violation> {
        let mut buf = Vec::new();
        let mut events = Vec::new();
        for piece in wire.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                let (used, read) = reader.read_in_place(&mut buf)?;
                let event = match read {
                    Read::Event(e) => e,
                    Read::InPlace { text, at } => Some(Event::Message {
                        text,
                        data: buf[at].to_vec(),
                    }),
                };
                buf.drain(..used);
                events.extend(event);
                if used == 0 {
                    break;
                }
            }
        }
        assert!(buf.is_empty(), "bytes left over");
        Ok(events)
    }

    const M: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn violations_table() {
        let mut frag_utf8 = Vec::new();
        client_frame(
            &mut frag_utf8,
            false,
            false,
            Opcode::Text,
            b"\xce\xba\xe1",
            M,
        );
        client_frame(
            &mut frag_utf8,
            true,
            false,
            Opcode::Continuation,
            b"\xbd\xb9\xed\xa0\x80",
            M,
        );
        let mut nested = Vec::new();
        client_frame(&mut nested, false, false, Opcode::Text, b"a", M);
        client_frame(&mut nested, true, false, Opcode::Binary, b"b", M);
        let mut open_char = Vec::new();
        client_frame(&mut open_char, true, false, Opcode::Text, b"ab\xe2\x82", M);
        let mut big = Vec::new();
        client_frame(&mut big, true, false, Opcode::Binary, &[0; 101], M);
        let mut big_frags = Vec::new();
        client_frame(&mut big_frags, false, false, Opcode::Binary, &[0; 60], M);
        client_frame(
            &mut big_frags,
            true,
            false,
            Opcode::Continuation,
            &[0; 60],
            M,
        );
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("unmasked", b"\x81\x02hi".to_vec(), 1002),
            ("reserved opcode", b"\x83\x80\0\0\0\0".to_vec(), 1002),
            ("rsv2", b"\xa1\x80\0\0\0\0".to_vec(), 1002),
            ("rsv1 without deflate", b"\xc1\x80\0\0\0\0".to_vec(), 1002),
            (
                "long ping",
                [&b"\x89\xfe\x00\x7e\0\0\0\0"[..], &[0; 126]].concat(),
                1002,
            ),
            ("fragmented ping", b"\x09\x80\0\0\0\0".to_vec(), 1002),
            ("lone continuation", b"\x80\x80\0\0\0\0".to_vec(), 1002),
            ("nested message", nested, 1002),
            ("bad utf8 across fragments", frag_utf8, 1007),
            ("open character at end", open_char, 1007),
            ("close with 1 byte", b"\x88\x81\0\0\0\0\x03".to_vec(), 1002),
            (
                "close with code 1005",
                b"\x88\x82\0\0\0\0\x03\xed".to_vec(),
                1002,
            ),
            (
                "close with bad reason",
                b"\x88\x84\0\0\0\0\x03\xe8\xff\xfe".to_vec(),
                1007,
            ),
            ("message over max size", big, 1009),
            ("fragments over max size", big_frags, 1009),
        ];
        for (name, wire, code) in cases {
            let got = read_all(&mut Reader::new(100, None), &wire, wire.len());
            assert_eq!(got.map_err(|v| v.code), Err(code), "{name}");
        }
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header_alone() {
        let mut reader = Reader::new(1 << 20, None);
        let header = b"\x82\xff\x00\x00\x00\x00\x01\x00\x00\x01\0\0\0\0";
        assert_eq!(reader.read(header), Err(TOO_BIG));
    }

    #[test]
    fn control_frames_interleave_with_fragments() {
        let mut wire = Vec::new();
        client_frame(&mut wire, false, false, Opcode::Text, "κό".as_bytes(), M);
        client_frame(&mut wire, true, false, Opcode::Ping, b"p", M);
        client_frame(
            &mut wire,
            true,
            false,
            Opcode::Continuation,
            "σμε".as_bytes(),
            M,
        );
        client_frame(&mut wire, true, false, Opcode::Close, b"\x0f\xa0bye", M);
        let events = read_all(&mut Reader::new(1 << 20, None), &wire, 3).unwrap();
        assert_eq!(
            events,
            [
                Event::Ping(b"p".to_vec()),
                Event::Message {
                    text: true,
                    data: "κόσμε".as_bytes().to_vec()
                },
                Event::Close(Some((4000, "bye".into()))),
            ]
        );
    }

    proptest! {
        /// Arbitrary bytes from a client end in events or a violation, never a panic, and the
        /// reader never claims more bytes than it was given.
        #[test]
        fn garbage_never_panics(mut wire in proptest::collection::vec(any::<u8>(), 0..600), deflate: bool, step in 1usize..64) {
            let mut reader = Reader::new(256, deflate.then(Agreed::default));
            // Masked and with a small length, so that the first frame gets past the header.
            if let [b0, b1, ..] = &mut wire[..] {
                *b0 &= 0x8f;
                *b1 = 0x80 | (*b1 & 0x3f);
            }
            let mut buf = Vec::new();
            'feed: for piece in wire.chunks(step) {
                buf.extend_from_slice(piece);
                loop {
                    match reader.read(&buf) {
                        Ok((0, _)) => break,
                        Ok((used, _)) => {
                            prop_assert!(used <= buf.len());
                            buf.drain(..used);
                        }
                        Err(v) => {
                            prop_assert!(matches!(v.code, 1002 | 1007 | 1009));
                            break 'feed;
                        }
                    }
                }
            }
        }

        /// Any message, fragmented anyhow, compressed or not, masked with any key and
        /// delivered in any read sizes, comes out whole and equal.
        #[test]
        fn fragmented_messages_round_trip(
            text: bool,
            body in prop_oneof![".{0,300}".prop_map(String::into_bytes), proptest::collection::vec(any::<u8>(), 0..3000)],
            cuts in proptest::collection::vec(0usize..3000, 0..5),
            mask: [u8; 4],
            deflate: bool,
            step in 1usize..400,
        ) {
            let text = text && std::str::from_utf8(&body).is_ok();
            let agreed = deflate.then(Agreed::default);
            let mut payload = Vec::new();
            match agreed {
                Some(a) => Deflater::new(a).compress(&body, &mut payload),
                None => payload.extend_from_slice(&body),
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(payload.len())).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut wire = Vec::new();
            let mut from = 0;
            let ends: Vec<usize> = cuts.into_iter().filter(|&c| c > 0 && c < payload.len()).chain([payload.len()]).collect();
            for (i, &end) in ends.iter().enumerate() {
                let opcode = if i > 0 { Opcode::Continuation } else if text { Opcode::Text } else { Opcode::Binary };
                client_frame(&mut wire, i + 1 == ends.len(), i == 0 && deflate, opcode, &payload[from..end], mask);
                from = end;
            }
            let events = read_all(&mut Reader::new(1 << 20, agreed), &wire, step).unwrap();
            prop_assert_eq!(events, vec![Event::Message { text, data: body }]);
        }
    }
}
