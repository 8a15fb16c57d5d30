//! The sending half: server frames (never masked) for the app's messages, pongs, pings and
//! close frames, compressed under permessage-deflate when that was negotiated.

use super::close;
use super::deflate::{Agreed, Deflater};
use super::frame::{encode_frame, encode_header, Opcode, MAX_CONTROL_PAYLOAD};

/// The sending state of one connection.
pub struct Writer {
    deflate: Option<Agreed>,
    /// Made at the first compressed message: an idle WebSocket holds no deflate state
    /// (a few hundred KiB with its hash tables). Boxed, as the reader's inflater.
    deflater: Option<Box<Deflater>>,
    scratch: Vec<u8>,
}

impl Writer {
    pub fn new(deflate: Option<Agreed>) -> Self {
        Self {
            deflate,
            deflater: None,
            scratch: Vec::new(),
        }
    }

    /// Whether data messages go out compressed: all of them once permessage-deflate was
    /// negotiated, however short (as websockets and uvicorn do; some clients, Autobahn's
    /// kosoku among them, mis-handle an uncompressed message on a deflate connection).
    pub fn compresses(&self) -> bool {
        self.deflate.is_some()
    }

    /// Appends one data message as a single frame.
    pub fn message(&mut self, out: &mut Vec<u8>, text: bool, data: &[u8]) {
        let opcode = if text { Opcode::Text } else { Opcode::Binary };
        self.frame(out, opcode, true, data);
    }

    /// Appends one frame of a data message: `opcode` Text or Binary for its first frame,
    /// Continuation for the others; `fin` on its last. Compressed when [`compresses`]
    /// (RSV1 on the first frame only, RFC 7692 §6.1).
    ///
    /// [`compresses`]: Self::compresses
    pub fn frame(&mut self, out: &mut Vec<u8>, opcode: Opcode, fin: bool, data: &[u8]) {
        match self.deflate {
            Some(agreed) => {
                let deflater = self
                    .deflater
                    .get_or_insert_with(|| Box::new(Deflater::new(agreed)));
                self.scratch.clear();
                deflater.compress_piece(data, fin, &mut self.scratch);
                let first = opcode != Opcode::Continuation;
                encode_frame(out, fin, first, opcode, &self.scratch);
            }
            None => {
                encode_header(out, fin, false, opcode, data.len(), None);
                out.extend_from_slice(data);
            }
        }
    }

    /// Appends the pong that answers a ping with `payload` (at most 125 bytes, as parsed).
    pub fn pong(&mut self, out: &mut Vec<u8>, payload: &[u8]) {
        encode_frame(
            out,
            true,
            false,
            Opcode::Pong,
            &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)],
        );
    }

    /// Appends a keep-alive ping.
    pub fn ping(&mut self, out: &mut Vec<u8>, payload: &[u8]) {
        encode_frame(
            out,
            true,
            false,
            Opcode::Ping,
            &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)],
        );
    }

    /// Appends a close frame; codes that may not be sent (1005, 1006, ...) become an empty
    /// close, as RFC 6455 §7.1.5 reads for "no status".
    pub fn close(&mut self, out: &mut Vec<u8>, code: u16, reason: &str) {
        if close::is_sendable(code) {
            encode_frame(
                out,
                true,
                false,
                Opcode::Close,
                &close::payload(code, reason),
            );
        } else {
            encode_frame(out, true, false, Opcode::Close, &[]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::{apply_mask, parse_header};
    use super::super::message::{Event, Reader};
    use super::*;

    /// Turns server frames into client frames (the same bytes, masked), so that the
    /// server-side reader can check what the writer produced.
    fn as_client(wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let (h, len) = parse_header(&wire[at..]).unwrap().unwrap();
            assert_eq!(h.mask, None, "server frames are never masked");
            let payload = &wire[at + len..at + len + h.len as usize];
            let mask = [9, 8, 7, 6];
            encode_header(&mut out, h.fin, h.rsv1, h.opcode, payload.len(), Some(mask));
            at += len + payload.len();
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], mask, 0);
        }
        out
    }

    #[test]
    fn frames_written_read_back() {
        for deflate in [
            None,
            Some(Agreed::default()),
            Some(Agreed {
                server_no_context_takeover: true,
                ..Agreed::default()
            }),
            Some(Agreed {
                server_max_window_bits: Some(9),
                ..Agreed::default()
            }),
        ] {
            let mut w = Writer::new(deflate);
            let mut wire = Vec::new();
            let long = "héllo ".repeat(5000);
            w.message(&mut wire, true, b"hi");
            w.message(&mut wire, true, long.as_bytes());
            w.message(&mut wire, false, long.as_bytes());
            // A message longer than one slot goes out as fragments, each compressed.
            w.frame(&mut wire, Opcode::Binary, false, &long.as_bytes()[..7000]);
            w.frame(
                &mut wire,
                Opcode::Continuation,
                false,
                &long.as_bytes()[7000..20000],
            );
            w.frame(
                &mut wire,
                Opcode::Continuation,
                true,
                &long.as_bytes()[20000..],
            );
            w.message(&mut wire, false, b"");
            w.pong(&mut wire, b"p");
            w.ping(&mut wire, b"");
            w.close(&mut wire, 1000, &"x".repeat(300));
            w.close(&mut wire, close::NO_STATUS, "ignored");
            let peer = Agreed {
                client_no_context_takeover: deflate.is_some_and(|a| a.server_no_context_takeover),
                client_max_window_bits: deflate.and_then(|a| a.server_max_window_bits),
                ..Agreed::default()
            };
            let mut reader = Reader::new(1 << 20, deflate.map(|_| peer));
            let client = as_client(&wire);
            let mut events = Vec::new();
            let mut at = 0;
            while at < client.len() {
                let (used, event) = reader.read(&client[at..]).unwrap();
                assert!(used > 0);
                at += used;
                events.extend(event);
            }
            assert_eq!(
                events,
                [
                    Event::Message {
                        text: true,
                        data: b"hi".to_vec()
                    },
                    Event::Message {
                        text: true,
                        data: long.clone().into_bytes()
                    },
                    Event::Message {
                        text: false,
                        data: long.clone().into_bytes()
                    },
                    Event::Message {
                        text: false,
                        data: long.clone().into_bytes()
                    },
                    Event::Message {
                        text: false,
                        data: Vec::new()
                    },
                    Event::Pong(b"p".to_vec()),
                    Event::Ping(Vec::new()),
                    Event::Close(Some((1000, "x".repeat(123)))),
                    Event::Close(None),
                ],
                "{deflate:?}"
            );
            if deflate.is_some() {
                assert!(wire.len() < long.len(), "long messages are compressed");
                // Every data frame's first byte: FIN, RSV1 on each message's first frame.
                let mut firsts = Vec::new();
                let mut at = 0;
                while at < wire.len() {
                    let (h, len) = parse_header(&wire[at..]).unwrap().unwrap();
                    firsts.push((h.fin, h.rsv1, h.opcode));
                    at += len + h.len as usize;
                }
                let rsv1: Vec<bool> = firsts[..6].iter().map(|f| f.1).collect();
                assert_eq!(rsv1, [true, true, true, true, false, false]);
                assert!(firsts[6].1, "an empty message is compressed too");
            }
        }
    }
}
