//! Deterministic test traffic: request payloads that are a pure function of the stream id,
//! and the answer a worker gives to them. Both sides recompute what the other must have
//! written, so every byte that crosses the segment is checked.

/// Largest request payload.
pub const MAX_PAYLOAD: usize = 64;
/// Bytes of "head" at the start of every response slot: the request's checksum.
pub const HEAD_LEN: usize = 8;
/// Largest response: head plus the transformed payload.
pub const MAX_RESPONSE: usize = HEAD_LEN + MAX_PAYLOAD;

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast in debug builds, and the same sequence
/// everywhere.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (slightly biased; irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Writes the payload of request `stream` into `out` and returns its length, 0..=64.
pub fn request_payload(stream: u64, out: &mut [u8; MAX_PAYLOAD]) -> usize {
    let mut rng = SplitMix64::new(stream ^ 0x7572_696e_6761_7069);
    let len = rng.below(MAX_PAYLOAD as u64 + 1) as usize;
    for chunk in out[..len].chunks_mut(8) {
        let word = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    len
}

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The worker's answer to `request` of `stream`: an 8-byte head holding the request's FNV-1a
/// checksum (little endian), then the request bytes reversed and XORed with the stream's low
/// byte. Returns the length written, `HEAD_LEN + request.len()`.
pub fn response_for(stream: u64, request: &[u8], out: &mut [u8; MAX_RESPONSE]) -> usize {
    out[..HEAD_LEN].copy_from_slice(&fnv1a(request).to_le_bytes());
    let key = stream as u8;
    for (o, &b) in out[HEAD_LEN..HEAD_LEN + request.len()]
        .iter_mut()
        .zip(request.iter().rev())
    {
        *o = b ^ key;
    }
    HEAD_LEN + request.len()
}
