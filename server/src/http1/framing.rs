//! Request body framing: Content-Length and the chunked coding (RFC 9112 §7.1).

use super::encode::is_tchar;

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A broken chunked body. All map to 400 (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    SizeLine,
    #[error("chunk size overflows")]
    SizeOverflow,
    #[error("chunk data not followed by CRLF")]
    MissingCrlf,
    #[error("chunk line or trailer too long")]
    LineTooLong,
    #[error("trailer line is not a field line")]
    BadTrailer,
    #[error("trailer section longer than {MAX_TRAILERS} bytes")]
    TrailersTooLong,
}

/// Longest chunk-size line (with extensions) or trailer line we accept.
const MAX_LINE: usize = 4096;

/// Longest trailer section we read (the server passes trailers on to no one): without a
/// bound, a client could send trailer lines for ever and its request would never end.
pub const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading "size[;ext]\r\n".
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading trailer lines until an empty one; this many bytes of them so far.
    Trailer(usize),
    Done,
}

/// An incremental chunked-body decoder: feed it bytes, it hands out data and tells how much
/// input it consumed. It never reads past the end of the body, so pipelined bytes stay put.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self { state: State::Size }
    }
}

/// Finds a CRLF-terminated line at the start of `input`. Bare LF is refused (RFC 9112 §7.1
/// requires CRLF in chunk framing).
fn line(input: &[u8]) -> Result<Option<(&[u8], usize)>, ChunkError> {
    match input.iter().position(|&b| b == b'\n') {
        Some(i) if i == 0 || input[i - 1] != b'\r' => Err(ChunkError::SizeLine),
        Some(i) if i > MAX_LINE => Err(ChunkError::LineTooLong),
        Some(i) => Ok(Some((&input[..i - 1], i + 1))),
        None if input.len() > MAX_LINE => Err(ChunkError::LineTooLong),
        None => Ok(None),
    }
}

fn chunk_size(line: &[u8]) -> Result<u64, ChunkError> {
    // chunk-size = 1*HEXDIG, then optional BWS ";" extensions, which we ignore. Blanks
    // (BWS: SP, HTAB) may stand only before a ";": "5 " alone is refused, as llhttp does.
    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let (mut digits, ext) = (&line[..end], &line[end..]);
    if !ext.is_empty() {
        while let [rest @ .., b' ' | b'\t'] = digits {
            digits = rest;
        }
    }
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(ChunkError::SizeLine);
    }
    if ext.iter().any(|&b| b == b'\r' || b == 0) {
        return Err(ChunkError::SizeLine);
    }
    digits
        .iter()
        .try_fold(0u64, |acc, &d| {
            let v = (d as char).to_digit(16).expect("hex digit") as u64;
            acc.checked_mul(16)?.checked_add(v)
        })
        .ok_or(ChunkError::SizeOverflow)
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, calling `data` with each run of body bytes (borrowed from
    /// `input`). Returns the bytes of `input` consumed; stops early when the body ends.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
        data: impl FnMut(&'a [u8]),
    ) -> Result<usize, ChunkError> {
        self.decode_limited(input, usize::MAX, data)
    }

    /// As [`decode`](Self::decode), handing out at most `limit` body bytes.
    pub fn decode_limited<'a>(
        &mut self,
        input: &'a [u8],
        mut limit: usize,
        mut data: impl FnMut(&'a [u8]),
    ) -> Result<usize, ChunkError> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                State::Done => return Ok(at),
                State::Size => {
                    let Some((l, used)) = line(rest)? else {
                        return Ok(at);
                    };
                    let size = chunk_size(l)?;
                    at += used;
                    self.state = if size == 0 {
                        State::Trailer(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if rest.is_empty() || limit == 0 {
                        return Ok(at);
                    }
                    let n = (left.min(usize::MAX as u64) as usize)
                        .min(rest.len())
                        .min(limit);
                    limit -= n;
                    data(&rest[..n]);
                    at += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => {
                    if rest.len() < 2 {
                        // A lone byte that is not CR can already be refused.
                        if rest.first().is_some_and(|&b| b != b'\r') {
                            return Err(ChunkError::MissingCrlf);
                        }
                        return Ok(at);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(ChunkError::MissingCrlf);
                    }
                    at += 2;
                    self.state = State::Size;
                }
                State::Trailer(read) => {
                    let Some((l, used)) = line(rest)? else {
                        if read + rest.len() > MAX_TRAILERS {
                            return Err(ChunkError::TrailersTooLong);
                        }
                        return Ok(at);
                    };
                    if l.is_empty() {
                        self.state = State::Done;
                    } else if !field_line(l) {
                        return Err(ChunkError::BadTrailer);
                    } else if read + used > MAX_TRAILERS {
                        return Err(ChunkError::TrailersTooLong);
                    } else {
                        self.state = State::Trailer(read + used);
                    }
                    at += used;
                }
            }
        }
    }
}

/// RFC 9112 §7.1.2, §5: a trailer line is `field-name ":" OWS field-value OWS`; the name
/// is a token, the value visible chars, SP, HTAB or obs-text. A line that is anything else
/// (no colon, obs-fold, a NUL or CR) makes the message unparseable: refusing it keeps a
/// lax trailer from being read differently by a proxy in front (smuggling).
fn field_line(l: &[u8]) -> bool {
    let Some(colon) = l.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = (&l[..colon], &l[colon + 1..]);
    !name.is_empty()
        && name.iter().all(|&b| is_tchar(b))
        && value
            .iter()
            .all(|&b| b == b' ' || b == b'\t' || (b >= 0x21 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let n = d.decode(input, |b| out.extend_from_slice(b))?;
        Ok((out, n, d.is_done()))
    }

    #[test]
    fn valid_bodies() {
        let (out, n, done) =
            all(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT").unwrap();
        assert_eq!(out, b"hello world");
        assert!(done);
        assert_eq!(n, 40, "stops right after the trailer section, before NEXT");
        let (out, _, done) = all(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!((out.as_slice(), done), (&b"0123456789"[..], true));
        // BWS before an extension (RFC 9112 §7.1.1).
        let (out, _, done) = all(b"5 \t;a=b\r\nhello\r\n0\r\n\r\n").unwrap();
        assert_eq!((out.as_slice(), done), (&b"hello"[..], true));
    }

    #[test]
    fn broken_bodies() {
        let cases: &[(&[u8], ChunkError)] = &[
            (b"x\r\n", ChunkError::SizeLine),
            (b"5\nhello", ChunkError::SizeLine),
            (b"5\r\nhelloXX", ChunkError::MissingCrlf),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::MissingCrlf),
            (b"fffffffffffffffffff\r\n", ChunkError::SizeOverflow),
            (b"-1\r\n", ChunkError::SizeLine),
            (b"\r\n", ChunkError::SizeLine),
            // Blanks after the size belong to an extension; alone they are not allowed.
            (b"5 \r\nhello\r\n", ChunkError::SizeLine),
            (b"5\t\r\nhello\r\n", ChunkError::SizeLine),
            // RFC 9112 §7.1.2: every trailer line is a field line (HTTP Garden payload).
            (b"0\r\nfoo\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\n: v\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\nX Y: v\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\nX: v\r\n folded\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\nX: a\0b\r\n\r\n", ChunkError::BadTrailer),
        ];
        for (raw, err) in cases {
            assert_eq!(
                all(raw).unwrap_err(),
                *err,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn the_trailer_section_is_bounded() {
        // 100-byte lines: 163 of them fit in 16 KiB, 164 do not; fed whole or a line at a
        // time (a client that sends trailers for ever is refused, not read for ever).
        let line = format!("X-T: {}\r\n", "a".repeat(93));
        assert_eq!(line.len(), 100);
        for (lines, ok) in [(163, true), (164, false)] {
            let wire = format!("1\r\nx\r\n0\r\n{}\r\n", line.repeat(lines));
            assert_eq!(all(wire.as_bytes()).is_ok(), ok, "{lines} lines");
            let mut d = ChunkedDecoder::default();
            let mut fed = Vec::new();
            let mut result = Ok(0);
            for piece in wire.as_bytes().chunks(100) {
                fed.extend_from_slice(piece);
                result = d.decode(&fed, |_| {}).inspect(|&n| {
                    fed.drain(..n);
                });
                if result.is_err() {
                    break;
                }
            }
            assert_eq!(
                result.is_ok() && d.is_done(),
                ok,
                "{lines} lines, in pieces"
            );
            if !ok {
                assert_eq!(result.unwrap_err(), ChunkError::TrailersTooLong);
            }
        }
    }

    proptest! {
        /// Any body, chunked any way and fed in any split, decodes to itself.
        #[test]
        fn round_trip_in_pieces(body in proptest::collection::vec(any::<u8>(), 0..2000),
                                chunk in 1usize..300, split in 1usize..50) {
            let mut wire = Vec::new();
            for c in body.chunks(chunk) {
                wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::new();
            let mut pending: Vec<u8> = Vec::new();
            for piece in wire.chunks(split) {
                pending.extend_from_slice(piece);
                let n = d.decode(&pending, |b| out.extend_from_slice(b)).unwrap();
                pending.drain(..n);
            }
            prop_assert!(d.is_done());
            prop_assert!(pending.is_empty());
            prop_assert_eq!(out, body);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..500)) {
            let mut d = ChunkedDecoder::default();
            let _ = d.decode(&bytes, |_| {});
        }
    }
}
