//! A mirror of the client's HPACK encoder state (RFC 7541), kept by the frame meter
//! (meter.rs) over every header block before h2 reads it.
//!
//! h2 answers a header block that does not decode with GOAWAY PROTOCOL_ERROR, where RFC
//! 9113 §4.3 names COMPRESSION_ERROR, and drops a pseudo-header field from trailers where
//! §8.1 makes the message malformed; its decoder is private. The mirror walks each block as
//! h2 will: integers, string lengths, Huffman codes (validated, never turned into bytes) and
//! the dynamic table, of which it keeps only each entry's sizes and whether its name is a
//! pseudo-header. A block that breaks a decoding rule is an [`Error`]; one that decodes
//! tells whether it carried a pseudo-header field.
//!
//! PERF: no allocation per field (the table's ring is reserved once per connection, for the
//! most entries 4,096 octets can hold); indexed fields cost a compare, literals a walk of
//! their bytes (Huffman bit by bit).

use std::collections::VecDeque;

/// SETTINGS_HEADER_TABLE_SIZE as the server announces it: h2's default, never changed
/// (mod.rs), so a size update above it is an error (RFC 7541 §4.2).
pub const TABLE_SIZE: usize = 4096;

/// Per-entry overhead (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// Why a block does not decode (each a COMPRESSION_ERROR, RFC 9113 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The block ends inside a representation (§6).
    Truncated,
    /// An integer past 2^32 (§5.1).
    Integer,
    /// Index 0 (§6.1) or past both tables (§2.3.3).
    Index,
    /// A size update above the limit (§4.2, §6.3).
    SizeTooLarge,
    /// A size update after a field (§4.2).
    SizeLate,
    /// The EOS symbol inside a Huffman string (§5.2).
    HuffmanEos,
    /// Huffman padding longer than 7 bits or not made of ones (§5.2).
    HuffmanPadding,
}

/// The static table's names (RFC 7541 Appendix A), index 1 first.
const STATIC: [&str; 61] = [
    ":authority",
    ":method",
    ":method",
    ":path",
    ":path",
    ":scheme",
    ":scheme",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "accept",
    "access-control-allow-origin",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "refresh",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
];

/// The Huffman code's length for each symbol, 0-255 and EOS (RFC 7541 Appendix B). The
/// code is canonical: codes of one length are consecutive, in symbol order, after the
/// shorter ones, so these lengths define it.
const HUFFMAN_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/// Codes of each length, and the first code of each length (canonical order).
const fn canonical() -> ([u32; 31], [u32; 31]) {
    let mut count = [0u32; 31];
    let mut i = 0;
    while i < 257 {
        count[HUFFMAN_LENGTHS[i] as usize] += 1;
        i += 1;
    }
    let mut first = [0u32; 31];
    let mut code = 0u32;
    let mut len = 1;
    while len <= 30 {
        first[len] = code;
        code = (code + count[len]) << 1;
        len += 1;
    }
    (count, first)
}

const CANONICAL: ([u32; 31], [u32; 31]) = canonical();
const COUNT: [u32; 31] = CANONICAL.0;
const FIRST: [u32; 31] = CANONICAL.1;

/// The code of ':', the first symbol of a pseudo-header name.
const COLON: u32 = {
    let mut code = FIRST[HUFFMAN_LENGTHS[b':' as usize] as usize];
    let mut s = 0;
    while s < b':' as usize {
        if HUFFMAN_LENGTHS[s] == HUFFMAN_LENGTHS[b':' as usize] {
            code += 1;
        }
        s += 1;
    }
    code
};

/// Walks a Huffman string: its decoded length and whether it starts with ':'.
fn huffman(bytes: &[u8]) -> Result<(usize, bool), Error> {
    let colon_len = u32::from(HUFFMAN_LENGTHS[b':' as usize]);
    let (mut code, mut len, mut n, mut colon) = (0u32, 0u32, 0usize, false);
    for &byte in bytes {
        for bit in (0..8).rev() {
            code = code << 1 | u32::from(byte >> bit & 1);
            len += 1;
            let l = len as usize;
            if code.wrapping_sub(FIRST[l]) < COUNT[l] {
                if len == 30 && code == 0x3fff_ffff {
                    return Err(Error::HuffmanEos);
                }
                if n == 0 {
                    colon = len == colon_len && code == COLON;
                }
                n += 1;
                code = 0;
                len = 0;
            } else if len == 30 {
                // Unreachable for a complete code; kept as a bound on `len`.
                return Err(Error::HuffmanEos);
            }
        }
    }
    // §5.2: at most 7 bits of padding, the most significant bits of EOS (all ones).
    if len > 7 || code != (1 << len) - 1 {
        return Err(Error::HuffmanPadding);
    }
    Ok((n, colon))
}

/// One dynamic table entry: what the mirror needs of it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    name_len: u32,
    size: u32,
    pseudo: bool,
}

/// What a block that decodes says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Block {
    /// Fields in it.
    pub fields: usize,
    /// A pseudo-header field (name starting with ':') among them.
    pub pseudo: bool,
}

/// The decoder state of one connection.
pub struct Mirror {
    /// Newest first (index 62).
    table: VecDeque<Entry>,
    size: usize,
    /// The table's maximum size, as the last size update set it.
    max: usize,
    /// What size updates may set it to (SETTINGS_HEADER_TABLE_SIZE).
    limit: usize,
}

impl Default for Mirror {
    fn default() -> Self {
        Self::new(TABLE_SIZE)
    }
}

/// Reads the block, advancing `at`.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    /// An integer with an `n`-bit prefix (§5.1), bounded by `u32::MAX`.
    fn int(&mut self, n: u32) -> Result<usize, Error> {
        let mask = (1u8 << n) - 1;
        let first = *self.b.get(self.at).ok_or(Error::Truncated)? & mask;
        self.at += 1;
        if first < mask {
            return Ok(usize::from(first));
        }
        let mut value = u64::from(mask);
        let mut shift = 0;
        loop {
            let byte = *self.b.get(self.at).ok_or(Error::Truncated)?;
            self.at += 1;
            value += u64::from(byte & 0x7f) << shift;
            if value > u64::from(u32::MAX) {
                return Err(Error::Integer);
            }
            if byte & 0x80 == 0 {
                return Ok(value as usize);
            }
            shift += 7;
            if shift > 28 {
                return Err(Error::Integer);
            }
        }
    }

    /// A string literal (§5.2): its decoded length and whether it starts with ':'.
    fn string(&mut self) -> Result<(usize, bool), Error> {
        let huff = *self.b.get(self.at).ok_or(Error::Truncated)? & 0x80 != 0;
        let len = self.int(7)?;
        let bytes = self.b.get(self.at..self.at + len).ok_or(Error::Truncated)?;
        self.at += len;
        if huff {
            huffman(bytes)
        } else {
            Ok((len, bytes.first() == Some(&b':')))
        }
    }
}

impl Mirror {
    /// A table for a decoder that announced `limit` as SETTINGS_HEADER_TABLE_SIZE.
    pub fn new(limit: usize) -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max: limit,
            limit,
        }
    }

    /// Entries in the dynamic table and their size (tests).
    #[cfg(test)]
    fn occupancy(&self) -> (usize, usize) {
        (self.table.len(), self.size)
    }

    /// A field's name by index: its length and whether it is a pseudo-header.
    fn name(&self, index: usize) -> Result<(usize, bool), Error> {
        match index {
            0 => Err(Error::Index),
            1..=61 => Ok((STATIC[index - 1].len(), index <= 14)),
            _ => self
                .table
                .get(index - 62)
                .map(|e| (e.name_len as usize, e.pseudo))
                .ok_or(Error::Index),
        }
    }

    fn evict_to(&mut self, room: usize) {
        while self.size > room {
            match self.table.pop_back() {
                Some(e) => self.size -= e.size as usize,
                None => break,
            }
        }
    }

    /// §4.4: an entry larger than the table empties it and is not added.
    fn insert(&mut self, name_len: usize, value_len: usize, pseudo: bool) {
        let size = name_len + value_len + ENTRY_OVERHEAD;
        if size > self.max {
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max - size);
        if self.table.capacity() == 0 {
            self.table.reserve(TABLE_SIZE / ENTRY_OVERHEAD);
        }
        self.table.push_front(Entry {
            name_len: name_len as u32,
            size: size as u32,
            pseudo,
        });
        self.size += size;
    }

    /// Decodes one complete header block, updating the table as the client's encoder did.
    /// After an error the state is no longer the client's: the connection is to be closed.
    pub fn decode(&mut self, block: &[u8]) -> Result<Block, Error> {
        let mut r = Reader { b: block, at: 0 };
        let mut out = Block::default();
        while let Some(&first) = block.get(r.at) {
            if first & 0x80 != 0 {
                // §6.1: indexed field.
                let (_, pseudo) = self.name(r.int(7)?)?;
                out.pseudo |= pseudo;
            } else if first & 0xe0 == 0x20 {
                // §6.3: dynamic table size update, only before the first field (§4.2).
                let size = r.int(5)?;
                if out.fields > 0 {
                    return Err(Error::SizeLate);
                }
                if size > self.limit {
                    return Err(Error::SizeTooLarge);
                }
                self.max = size;
                self.evict_to(size);
                continue;
            } else {
                // §6.2: a literal, with incremental indexing (01), or without / never
                // indexed (0000, 0001).
                let indexing = first & 0xc0 == 0x40;
                let index = r.int(if indexing { 6 } else { 4 })?;
                let (name_len, pseudo) = if index == 0 {
                    r.string()?
                } else {
                    self.name(index)?
                };
                let (value_len, _) = r.string()?;
                if indexing {
                    self.insert(name_len, value_len, pseudo);
                }
                out.pseudo |= pseudo;
            }
            out.fields += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A raw string literal.
    fn lit(s: &[u8]) -> Vec<u8> {
        assert!(s.len() < 127);
        [&[s.len() as u8][..], s].concat()
    }

    /// A literal with incremental indexing and a new (raw) name.
    fn indexed_new(name: &[u8], value: &[u8]) -> Vec<u8> {
        [&[0x40][..], &lit(name), &lit(value)].concat()
    }

    #[test]
    fn the_rfc_request_examples_decode_with_their_table_sizes() {
        // RFC 7541 C.3 (raw strings) and C.4 (the same requests Huffman-coded): the
        // table holds 57, 110, then 164 octets (§4.1 sizes of the decoded strings).
        for blocks in [
            [
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
            [
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
        ] {
            let mut m = Mirror::default();
            let mut sizes = Vec::new();
            for b in blocks {
                let out = m.decode(&hex(b)).unwrap();
                assert!(out.pseudo);
                sizes.push(m.occupancy());
            }
            assert_eq!(sizes, [(1, 57), (2, 110), (3, 164)]);
        }
    }

    #[test]
    fn each_decoding_error_is_found() {
        let cases: &[(&[u8], Error)] = &[
            (b"\x80", Error::Index),                // §6.1 index 0
            (&[0x80 | 70], Error::Index),           // §2.3.3 past both tables
            (&[0x80 | 62], Error::Index),           // empty dynamic table
            (b"\x7e\x01v", Error::Index),           // name index 62, nothing there
            (b"\x0f\x2f\x01v", Error::Index),       // without indexing, name index 62
            (b"\x82\x20", Error::SizeLate),         // §4.2 update after a field
            (b"\x3f\xe2\x1f", Error::SizeTooLarge), // 4097 > 4096
            (b"\x00\x84\xff\xff\xff\xff\x01v", Error::HuffmanEos),
            (b"\x00\x82\x1f\xff\x01v", Error::HuffmanPadding), // 'a' + 11 bits of ones
            (b"\x00\x81\x18\x01v", Error::HuffmanPadding),     // 'a' + zeros
            (
                b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                Error::Integer,
            ),
            (b"\x00\x7f\x10abc", Error::Truncated), // string past the block
            (b"\x40\x05x-on", Error::Truncated),
            (b"\x82\x86\x84\xff\xff\xff\xff\xff", Error::Truncated),
            (b"\x40", Error::Truncated),
        ];
        for (block, want) in cases {
            let mut m = Mirror::default();
            assert_eq!(m.decode(block), Err(*want), "{block:?}");
        }
        // Their valid neighbours decode.
        let good: &[&[u8]] = &[
            &[0x80 | 61],            // last static entry
            b"\x00\x81\x1f\x01v",    // 'a' + 3 bits of ones
            b"\x3f\xe1\x1f\x82",     // update to exactly 4096, then a field
            b"\x20\x3f\xe1\x1f\x82", // two updates at the start
            b"\x0f\x2e\x01v",        // without indexing, name index 61
            b"\x10\x01a\x01b",       // never indexed, new name
        ];
        for block in good {
            let mut m = Mirror::default();
            assert!(m.decode(block).is_ok(), "{block:?}");
        }
    }

    #[test]
    fn entries_are_evicted_oldest_first_and_sizes_follow_updates() {
        // Five entries of 1,038 octets in 4,096: the two oldest go; 62-64 are the newest.
        let mut m = Mirror::default();
        let big: Vec<u8> = (0..5u8)
            .flat_map(|i| {
                let mut b = vec![0x40, 6];
                b.extend_from_slice(b"x-big");
                b.push(b'0' + i);
                b.extend_from_slice(&[0x7f, 0xe9, 0x06]); // 127 + 105 + 6 * 128 = 1000
                b.extend(std::iter::repeat_n(b'v', 1000));
                b
            })
            .collect();
        assert_eq!(
            m.decode(&big),
            Ok(Block {
                fields: 5,
                pseudo: false
            })
        );
        assert_eq!(m.occupancy(), (3, 3 * 1038));
        assert!(m.decode(&[0x80 | 64]).is_ok());
        assert_eq!(m.decode(&[0x80 | 65]), Err(Error::Index));
        // An update to 2,076 evicts one more; to 0 empties the table.
        let mut m2 = Mirror::default();
        m2.decode(&big).unwrap();
        assert!(m2.decode(&[0x3f, 0xfd, 0x0f, 0x80 | 63]).is_ok()); // 31 + 2045 = 2076
        assert_eq!(m2.occupancy(), (2, 2076));
        assert_eq!(m2.decode(&[0x80 | 64]), Err(Error::Index));
        let mut m3 = Mirror::default();
        m3.decode(&indexed_new(b"x-one", b"1")).unwrap();
        assert_eq!(m3.occupancy(), (1, 38));
        assert!(m3.decode(&[0x20, 0x82]).is_ok());
        assert_eq!(m3.occupancy(), (0, 0));
        assert_eq!(m3.decode(&[0x80 | 62]), Err(Error::Index));
        // With the maximum at 0, an entry does not fit: the table stays empty (§4.4), and
        // the size can go back up to the limit.
        m3.decode(&indexed_new(b"x-two", b"2")).unwrap();
        assert_eq!(m3.occupancy(), (0, 0));
        m3.decode(&[0x3f, 0xe1, 0x1f]).unwrap();
        m3.decode(&indexed_new(b"x-two", b"2")).unwrap();
        assert_eq!(m3.occupancy(), (1, 38));
        // An entry larger than the whole table empties it and is not added.
        let mut m4 = Mirror::new(100);
        m4.decode(&indexed_new(b"a", b"b")).unwrap();
        m4.decode(&indexed_new(b"x", &[b'y'; 80])).unwrap();
        assert_eq!(m4.occupancy(), (0, 0));
    }

    #[test]
    fn pseudo_header_names_are_told_from_regular_ones() {
        let mut m = Mirror::default();
        let cases: &[(&[u8], bool)] = &[
            (&[0x80 | 4], true),           // :path /
            (&[0x80 | 15], false),         // accept-charset
            (&[0x04, 0x01, b'/'], true),   // :path, literal value
            (b"\x00\x05:path\x01/", true), // raw new name
            (b"\x00\x81\xb9\x01/", true),  // Huffman ':' (1011100) + ones
            (b"\x00\x81\x1f\x01/", false), // Huffman 'a'
            (b"\x40\x05:abcd\x01/", true), // inserted as pseudo...
            (&[0x80 | 62], true),          // ...and indexed as such
            (b"\x40\x01a\x01/", false),
            (&[0x80 | 62], false),
            (&[0x80 | 63], true),
        ];
        for (block, pseudo) in cases {
            assert_eq!(m.decode(block).map(|b| b.pseudo), Ok(*pseudo), "{block:?}");
        }
    }
}
