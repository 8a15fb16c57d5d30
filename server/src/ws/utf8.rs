//! Incremental UTF-8 validation: a text message arrives in fragments (and, compressed, in
//! inflated chunks) that may split a character anywhere; an invalid sequence is reported as
//! soon as its first bad byte arrives (fail fast), not only at the end of the message.

/// Validates a byte stream fed in pieces.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// The bytes of a character begun in an earlier piece (at most 3).
    pending: [u8; 4],
    pending_len: usize,
}

/// The stream holds a byte sequence that no continuation can make valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece of the stream.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        // Complete the character left open by the previous piece, one byte at a time.
        while self.pending_len > 0 {
            let Some((&byte, rest)) = input.split_first() else {
                return Ok(());
            };
            self.pending[self.pending_len] = byte;
            self.pending_len += 1;
            input = rest;
            match std::str::from_utf8(&self.pending[..self.pending_len]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {}
            }
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                // A valid prefix of a character ends the piece: keep it for the next one.
                let tail = &input[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len();
                Ok(())
            }
        }
    }

    /// Ends the stream: a character still open is an error.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let open = self.pending_len;
        self.pending_len = 0;
        if open == 0 {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_everywhere(bytes: &[u8]) -> bool {
        let whole = std::str::from_utf8(bytes).is_ok();
        for cut in 0..=bytes.len() {
            let mut v = Utf8Validator::new();
            let got = v
                .feed(&bytes[..cut])
                .and_then(|_| v.feed(&bytes[cut..]))
                .and_then(|_| v.finish());
            assert_eq!(got.is_ok(), whole, "cut at {cut} of {bytes:?}");
        }
        whole
    }

    #[test]
    fn every_split_agrees_with_whole_validation() {
        assert!(split_everywhere("κόσμε €𝄞 ascii".as_bytes()));
        assert!(!split_everywhere(
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"
        ));
        assert!(!split_everywhere(b"\xf4\x90\x80\x80"));
        assert!(!split_everywhere(b"ok\xc0\xaf"));
    }

    #[test]
    fn fails_fast_on_the_first_bad_byte_and_at_end_on_an_open_character() {
        let mut v = Utf8Validator::new();
        assert_eq!(
            v.feed(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90"),
            Err(InvalidUtf8)
        );
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ab\xe2\x82"), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xf0"), Ok(()));
        assert_eq!(v.feed(b"\x9d"), Ok(()));
        assert_eq!(v.feed(b"\x84\x9e"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }
}
