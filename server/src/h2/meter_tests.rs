//! The frame meter's tests (meter.rs): floods, malformed frames, the HPACK mirror.
use super::*;

fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&1u32.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn a_ping_flood_trips_and_acks_and_requests_do_not() {
    let mut m = Meter::new();
    m.feed(PREFACE);
    m.feed(&frame(0x4, 0, &[0; 6]));
    for _ in 0..1000 {
        m.feed(&frame(0x4, 1, &[]));
        m.feed(&frame(0x6, 1, &[0; 8]));
        m.feed(&frame(0x0, 0, &[7; 100]));
    }
    assert!(!m.tripped());
    for _ in 0..200 {
        m.feed(&frame(0x6, 0, &[0; 8]));
    }
    assert_eq!(
        m.trip.tripped(),
        Some((Reason::ENHANCE_YOUR_CALM, Some(Defence::PingFlood)))
    );
}

#[test]
fn headers_split_anywhere_are_followed() {
    let mut m = Meter::new();
    let mut bytes = PREFACE.to_vec();
    for _ in 0..100 {
        bytes.extend(frame(0x4, 0, &[0; 6]));
    }
    for b in bytes.chunks(5) {
        m.feed(b);
    }
    assert_eq!(
        m.trip.tripped(),
        Some((Reason::ENHANCE_YOUR_CALM, Some(Defence::SettingsFlood)))
    );
}

#[test]
fn resets_past_the_budget_trip() {
    let mut m = Meter::new();
    m.feed(PREFACE);
    m.feed(&frame(0x4, 0, &[]));
    for _ in 0..(RESETS.burst as usize + 50) {
        m.feed(&frame(0x3, 0, &[0; 4]));
    }
    assert_eq!(
        m.trip.tripped().map(|t| t.1),
        Some(Some(Defence::RapidReset))
    );
}

#[test]
fn malformed_frames_are_held_back_from_their_last_header_byte() {
    let settings = frame(0x4, 0, &[0, 3, 0, 0, 0, 100]);
    let cases: &[(Vec<u8>, Reason)] = &[
        (frame(0x6, 0, &[0; 8]), Reason::PROTOCOL_ERROR),
        (frame(0x4, 1, &[]), Reason::PROTOCOL_ERROR),
        (
            [settings.clone(), frame(0x6, 0, &[0; 7])].concat(),
            Reason::FRAME_SIZE_ERROR,
        ),
        (
            [settings.clone(), frame(0x3, 0, &[0; 5])].concat(),
            Reason::FRAME_SIZE_ERROR,
        ),
        (
            [settings.clone(), frame(0x8, 0, &[0; 3])].concat(),
            Reason::FRAME_SIZE_ERROR,
        ),
        (
            [settings.clone(), frame(0x2, 0, &[0; 4])].concat(),
            Reason::FRAME_SIZE_ERROR,
        ),
        (
            [settings.clone(), frame(0x7, 0, &[0; 7])].concat(),
            Reason::FRAME_SIZE_ERROR,
        ),
        (
            [settings.clone(), frame(0x4, 1, &[0; 6])].concat(),
            Reason::FRAME_SIZE_ERROR,
        ),
        (frame(0x4, 0, &[0; 7]), Reason::FRAME_SIZE_ERROR),
        (
            frame(0x4, 0, &[0, 1, 0, 0, 0, 0, 0, 4, 0x80, 0, 0, 0]),
            Reason::FLOW_CONTROL_ERROR,
        ),
        (
            [
                settings.clone(),
                frame(0x1, 0x5, &[0x82]),
                frame(0x0, 0, b"x"),
            ]
            .concat(),
            Reason::STREAM_CLOSED,
        ),
        (
            [
                settings.clone(),
                frame(0x1, 0x4, &[0x83]),
                frame(0x0, 1, b"x"),
            ]
            .concat()
            .into_iter()
            .chain(frame(0x1, 0x5, &[0x40]))
            .collect(),
            Reason::STREAM_CLOSED,
        ),
    ];
    for (bytes, reason) in cases {
        let mut m = Meter::new();
        let all = [PREFACE, bytes].concat();
        let taken = m.feed(&all);
        assert_eq!(m.trip.tripped(), Some((*reason, None)), "{bytes:?}");
        assert!(taken < all.len(), "{bytes:?}: the frame reached h2 whole");
        assert_eq!(m.feed(b"more"), 0);
    }
    // Within the rules: everything passes, nothing trips.
    let mut m = Meter::new();
    let good = [
        PREFACE,
        &settings,
        &frame(0x4, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]),
        &frame(0x4, 1, &[]),
        &frame(0x6, 0, &[0; 8]),
        &frame(0x2, 0, &[0; 5]),
        &frame(0x7, 0, &[0; 12]),
        &frame(0x1, 0x4, &[0x83]),
        &frame(0x1, 0x2c, &[0; 6]),
        &frame(0x0, 0x8, &[0]),
        &frame(0x0, 0, b"body"),
        &frame(0x1, 0x5, &[0x40, 1, b'a', 1, b'b']),
        &frame(0x8, 0, &[0, 0, 0, 1]),
    ]
    .concat();
    assert_eq!(through(&mut m, &good, 4), good);
    assert_eq!(m.trip.tripped(), None);
    // A header block (with END_STREAM) cut by DATA: h2's PROTOCOL_ERROR, not the
    // meter's STREAM_CLOSED.
    let mut m = Meter::new();
    let cut = [
        PREFACE,
        &settings,
        &frame(0x1, 0x1, &[0x82]),
        &frame(0x0, 0, b"x"),
    ]
    .concat();
    assert_eq!(m.feed(&cut), cut.len());
    assert_eq!(m.trip.tripped(), None);
}

/// A frame on stream `id`.
fn on(id: u32, kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = frame(kind, flags, payload);
    f[5..9].copy_from_slice(&id.to_be_bytes());
    f
}

/// What h2 gets of `bytes` fed in chunks of `chunk` bytes, as io.rs hands them over:
/// what passes at once, then what a hold released.
fn through(m: &mut Meter, bytes: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in bytes.chunks(chunk) {
        let ok = m.feed(c);
        out.extend_from_slice(&c[..ok]);
        let n = m.pending().len();
        out.extend_from_slice(m.pending());
        m.took_pending(n);
    }
    out
}

/// The preface and a SETTINGS frame, then `frames`.
fn with_preface(frames: &[Vec<u8>]) -> Vec<u8> {
    [PREFACE.to_vec(), frame(0x4, 0, &[])]
        .into_iter()
        .chain(frames.iter().cloned())
        .collect::<Vec<_>>()
        .concat()
}

/// Feeds `frames` after the preface and a SETTINGS frame in chunks of `chunk` bytes:
/// how many bytes h2 got, of how many, and the trip.
fn run(frames: &[Vec<u8>], chunk: usize) -> (usize, usize, Option<(Reason, Option<Defence>)>) {
    let all = with_preface(frames);
    let mut m = Meter::new();
    let got = through(&mut m, &all, chunk);
    assert_eq!(
        got[..],
        all[..got.len()],
        "h2 got other bytes than were sent"
    );
    (got.len(), all.len(), m.trip.tripped())
}

#[test]
fn a_header_block_that_does_not_decode_is_held_back_from_its_last_byte() {
    const EH: u8 = 0x4; // END_HEADERS
    let req = [0x82, 0x86, 0x84, 0x41, 1, b'a'];
    let cases: Vec<Vec<Vec<u8>>> = vec![
        // §6.1 index 0 in a single HEADERS frame.
        vec![on(1, 0x1, 0x5, &[0x82, 0x80])],
        // Cut inside a literal, over HEADERS + CONTINUATION.
        vec![
            on(1, 0x1, 0x1, &[0x82, 0x86]),
            on(1, 0x9, EH, &[0x40, 0x05, b'x']),
        ],
        // Padded and with priority: the fields are skipped, the fragment is bad.
        vec![on(1, 0x1, 0x2d, &[2, 0, 0, 0, 0, 16, 0x80 | 70, 0, 0])],
        // An entry of an earlier block, then one past the table.
        vec![
            on(1, 0x1, 0x5, &[0x82, 0x40, 1, b'x', 1, b'y']),
            on(3, 0x1, 0x5, &[0x82, 0x80 | 62]),
            on(5, 0x1, 0x5, &[0x82, 0x80 | 63]),
        ],
        // A size update after a field, in a CONTINUATION.
        vec![
            on(1, 0x1, 0x1, &req),
            on(1, 0x9, 0, &[0x87]),
            on(1, 0x9, EH, &[0x20]),
        ],
    ];
    for frames in &cases {
        for chunk in [1, 3, 7, 1000] {
            let (taken, len, trip) = run(frames, chunk);
            assert_eq!(trip, Some((Reason::COMPRESSION_ERROR, None)), "{frames:?}");
            assert_eq!(
                taken,
                len - 1,
                "{frames:?} by {chunk}: h2 got the last byte"
            );
        }
    }
    // The same shapes when they decode: all bytes pass.
    let fine: Vec<Vec<Vec<u8>>> = vec![
        vec![on(1, 0x1, 0x5, &[0x82, 0x81])],
        vec![
            on(1, 0x1, 0x1, &[0x82, 0x86]),
            on(1, 0x9, EH, &[0x40, 0x01, b'x', 0]),
        ],
        vec![on(1, 0x1, 0x2d, &[2, 0, 0, 0, 0, 16, 0x80 | 61, 0, 0])],
        vec![
            on(1, 0x1, 0x5, &[0x82, 0x40, 1, b'x', 1, b'y']),
            on(3, 0x1, 0x5, &[0x82, 0x80 | 62]),
        ],
        vec![
            on(1, 0x1, 0x1, &[0x20]),
            on(1, 0x9, 0, &req),
            on(1, 0x9, EH, &[0x87]),
        ],
    ];
    for frames in &fine {
        for chunk in [1, 3, 7, 1000] {
            let (taken, len, trip) = run(frames, chunk);
            assert_eq!((taken, trip), (len, None), "{frames:?} by {chunk}");
        }
    }
    // A frame inside a block is h2's PROTOCOL_ERROR: the mirror stops following, and
    // blocks after it (here cut short) are left to h2 too.
    let cut = [
        on(1, 0x1, 0x1, &[0x82]),
        on(3, 0x1, 0x5, &[0x82, 0x40]),
        on(5, 0x1, 0x5, &[0x80]),
    ];
    assert_eq!(run(&cut, 1000).2, None);
}

#[test]
fn trailers_with_a_pseudo_header_reach_h2_without_end_stream() {
    let req = on(1, 0x1, 0x4, &[0x83, 0x86, 0x84, 0x41, 1, b'a']);
    let body = on(1, 0x0, 0, b"x");
    let path = [0x00, 5, b':', b'p', b'a', b't', b'h', 1, b'/'];
    for (trailers, malformed) in [
        (vec![on(1, 0x1, 0x5, &[0x84])], true),
        (vec![on(1, 0x1, 0x5, &path)], true),
        (vec![on(1, 0x1, 0x5, &[0x40, 1, b'x', 1, b'1'])], false),
        // A pseudo-header entry inserted by the request, indexed in the trailers.
        (vec![on(1, 0x1, 0x5, &[0x80 | 62])], true),
        // Over HEADERS and a CONTINUATION.
        (
            vec![on(1, 0x1, 0x1, &path[..4]), on(1, 0x9, 0x4, &path[4..])],
            true,
        ),
        (
            vec![on(1, 0x1, 0x1, &[0x40, 1]), on(1, 0x9, 0x4, b"x\x011")],
            false,
        ),
    ] {
        let all = with_preface(&[req.clone(), body.clone()]);
        let trailer_at = all.len();
        let all = [
            all,
            trailers.concat(),
            on(3, 0x1, 0x5, &[0x82, 0x86, 0x84, 0xbe]),
        ]
        .concat();
        let mut want = all.clone();
        if malformed {
            want[trailer_at + 4] &= !0x1;
        }
        for chunk in [1, 2, 5, 9, 13, 1000] {
            let mut m = Meter::new();
            assert_eq!(
                through(&mut m, &all, chunk),
                want,
                "{trailers:?} by {chunk}"
            );
            assert_eq!(m.trip.tripped(), None);
        }
    }
    // A new stream's request head carries pseudo-headers: not trailers.
    let (taken, len, trip) = run(
        &[req.clone(), on(3, 0x1, 0x5, &[0x82, 0x86, 0x84, 0xbe])],
        5,
    );
    assert_eq!((taken, trip), (len, None));
}
