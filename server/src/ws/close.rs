//! Close codes (RFC 6455 §7.4) and the close frame's payload: a 2-byte big-endian code and a
//! UTF-8 reason, or nothing at all.

use super::utf8::Utf8Validator;

pub const NORMAL: u16 = 1000;
pub const GOING_AWAY: u16 = 1001;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const UNSUPPORTED_DATA: u16 = 1003;
/// Reported to the app when the close frame carried no code; never sent on the wire.
pub const NO_STATUS: u16 = 1005;
/// Reported to the app when the connection ended without a close frame; never sent.
pub const ABNORMAL: u16 = 1006;
pub const INVALID_DATA: u16 = 1007;
pub const POLICY: u16 = 1008;
pub const TOO_BIG: u16 = 1009;
pub const INTERNAL_ERROR: u16 = 1011;

/// The longest reason that fits a control frame (125 bytes) after the code.
pub const MAX_REASON: usize = 123;

/// Whether a peer may send `code` in a close frame: the defined codes other than the
/// reserved ones (1004-1006, 1015), and the registered and private ranges 3000-4999.
pub fn is_sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A close frame's payload that breaks the rules: the code to close with in return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadClose {
    /// A 1-byte payload or a code nobody may send.
    Protocol,
    /// A reason that is not UTF-8.
    Utf8,
}

/// Parses a close payload: `None` when empty, else the code and the reason.
pub fn parse(payload: &[u8]) -> Result<Option<(u16, &str)>, BadClose> {
    match payload {
        [] => Ok(None),
        [_] => Err(BadClose::Protocol),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_sendable(code) {
                return Err(BadClose::Protocol);
            }
            let mut v = Utf8Validator::new();
            v.feed(reason)
                .and_then(|_| v.finish())
                .map_err(|_| BadClose::Utf8)?;
            // The validator just accepted it; from_utf8 cannot fail here.
            let reason = std::str::from_utf8(reason).map_err(|_| BadClose::Utf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Builds a close payload; a reason too long for a control frame is cut at a character
/// boundary at or below [`MAX_REASON`] bytes.
pub fn payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(2 + end);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = Result<Option<(u16, &'static str)>, BadClose>;

    #[test]
    fn payload_table() {
        let cases: &[(&[u8], Parsed)] = &[
            (b"", Ok(None)),
            (b"\x03", Err(BadClose::Protocol)),
            (b"\x03\xe8", Ok(Some((1000, "")))),
            (b"\x03\xe8bye", Ok(Some((1000, "bye")))),
            (b"\x0f\xa0", Ok(Some((4000, "")))),
            (b"\x03\xed", Err(BadClose::Protocol)), // 1005
            (b"\x03\xee", Err(BadClose::Protocol)), // 1006
            (b"\x03\xf7", Err(BadClose::Protocol)), // 1015
            (b"\x00\x00", Err(BadClose::Protocol)),
            (b"\x13\x88", Err(BadClose::Protocol)), // 5000
            (b"\x03\xe8\xce\xba\xe1\xbd", Err(BadClose::Utf8)),
        ];
        for (input, want) in cases {
            assert_eq!(&parse(input), want, "{input:?}");
        }
    }

    #[test]
    fn long_reason_is_cut_on_a_char_boundary() {
        let reason = "é".repeat(100);
        let p = payload(1001, &reason);
        assert!(p.len() <= 125);
        assert_eq!(parse(&p), Ok(Some((1001, &reason[..122]))));
    }
}
