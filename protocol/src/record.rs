//! The fixed-size record every ring carries.

/// "This record names no slot."
pub const NO_SLOT: u32 = u32::MAX;

/// Flag: more records for the same stream follow (body continues).
pub const MORE: u8 = 1;
/// Flag on a `Request` record: the client waits for `100 Continue` before it sends the body
/// (RFC 9110 §10.1.1); the worker answers with a `Continue` record when the app first asks
/// for the body.
pub const EXPECT_CONTINUE: u8 = 2;

/// `aux` of a `WsMessage` or `WsSend` record: a text message (0: binary).
pub const WS_TEXT: u32 = 1;
/// Records of one WebSocket direction that may be unacknowledged at once: client messages
/// not yet taken by the app (`BodyCredit`), app messages not yet written to the client
/// (`SendCredit`). At the default 64 KiB slot that bounds a WebSocket's buffered
/// messages to 512 KiB each way, however slow the app or the client.
/// PERF: 8 rather than 4: an app sending 100,000 messages of 64 bytes as fast as `send`
/// returns waited for a credit every 4 (a doorbell, an event-loop turn and a wake-up
/// each). Alternating runs of benches/e2e/ws_burst_ab.py's push case: with the front end's
/// joining of queued messages alone (websocket.rs `WS_GATHER_*`) 55-88 server ticks, with
/// this window too 30-46. The committed run of both against the previous build
/// (benches/results/ws-burst-2026-12-07.txt): 97-103 -> 31-50 ticks (uvicorn 24-31); a
/// client sending as many costs the same as before.
pub const WS_WINDOW: u32 = 8;
/// Response records of one HTTP stream sent with `MORE` that the front end may not yet
/// have written to the client (acknowledged with `SendCredit`, ring.rs rule 7). At the
/// default 64 KiB slot that bounds a response's bytes in flight to 512 KiB, so a client
/// that reads slowly, or not at all, holds its own app's `send()`, not its worker's slots:
/// the other requests on that worker go on.
pub const RESPONSE_WINDOW: u32 = 8;
/// A stream's response window when `open` streams (itself included) share `budget` records:
/// the full [`RESPONSE_WINDOW`] while there is room for it, never less than 1.
pub fn response_window_share(budget: u32, open: usize) -> u32 {
    let open = u32::try_from(open.max(1)).unwrap_or(u32::MAX);
    (budget / open).clamp(1, RESPONSE_WINDOW)
}

/// How many written response records the front end acknowledges at a time, for a stream
/// whose window is `window`: half of it, at least 1 (one credit record per record would cost
/// the worker a wake-up each; waiting for more than the window would never reopen it).
pub fn response_credit_at(window: u32) -> u32 {
    (window / 2).max(1)
}
/// Either side of a WebSocket holds back credit it owes (records taken or written) until
/// it owes this many, unless a record it sends first carries it (`extra` of `WsMessage`
/// and `WsSend`). Any value up to [`WS_WINDOW`] keeps both windows live: a side whose
/// window is closed is owed all of it, so a credit record goes out.
pub const WS_CREDIT_AT: u32 = WS_WINDOW / 2;

/// What a record means. Values are part of the wire contract.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    // ---- front end → worker ----
    /// A new request: the slot holds an encoded [`crate::head::RequestHead`] of `aux`
    /// bytes, then the first `len - aux` body bytes. `MORE`: body records follow.
    Request = 1,
    /// Request body bytes in the slot. `MORE`: more follow.
    Body = 2,
    /// The client went away; the app sees `http.disconnect`. No slot.
    Disconnect = 3,
    /// The front end gave up on the request (timeout); the worker cancels the task. No slot.
    Cancel = 4,
    // ---- front end → worker, WebSocket streams (5–8) ----
    /// A WebSocket upgrade the front end checked (RFC 6455 §4.2.1): the slot holds an
    /// encoded [`crate::head::RequestHead`] of `aux` (= `len`) bytes; the worker builds the
    /// `websocket` scope and the app's first `receive()` is `websocket.connect`.
    WsConnect = 5,
    /// A client message (or a slot-sized piece of one): bytes in the slot (none for an
    /// empty message), `aux` [`WS_TEXT`] or 0 (binary), the same on every piece. `MORE`:
    /// the message continues in the next record. Text pieces may split a character; the
    /// whole message is valid UTF-8 (checked by the front end). Counted against the
    /// stream's window and returned with `BodyCredit` (ring.rs rule 7). `extra`: `WsSend`
    /// records of the stream written to the client since the last credit (as `aux` of
    /// `SendCredit`; 0 for none).
    WsMessage = 6,
    /// The WebSocket ended on the client's side: `aux` is the close code the app sees in
    /// `websocket.disconnect` (the client's, 1005 for a close without one, 1006 for a lost
    /// connection, or the code the front end closed with). The slot (optional, `len` ≤ 123)
    /// holds the client's UTF-8 close reason; `aux` is not a head length here.
    WsDisconnect = 7,
    /// The front end wrote `aux` (≥ 1) records of the stream to the client: `WsSend`
    /// records of a WebSocket, or response records sent with `MORE` of an HTTP stream. The
    /// worker may have that many more in flight (the send windows, ring.rs rule 7). No slot.
    SendCredit = 8,
    // ---- worker → front end ----
    /// Response start: the slot holds an encoded response head of `aux` bytes, then the
    /// first `len - aux` body bytes. No `MORE`: the response is complete.
    Response = 16,
    /// Response body bytes in the slot. No `MORE`: the response is complete.
    ResponseBody = 17,
    /// The app failed after the response started: close the connection.
    Abort = 18,
    /// The app asked for the body of a request that carried `Expect: 100-continue`
    /// (flag [`EXPECT_CONTINUE`]): send `100 Continue`. No slot.
    Continue = 19,
    /// `http.response.pathsend`: the slot holds the response head (`aux` bytes; 0 when a
    /// `Response` record sent it already), then the absolute path of a file that the front
    /// end sends as the rest of the body. Always the last record of a response.
    PathSend = 20,
    // ---- worker → front end, WebSocket streams (21–23) ----
    /// `websocket.accept`: the slot holds an encoded response head of `aux` (= `len`) bytes
    /// whose status is ignored; a `sec-websocket-protocol` header names the chosen
    /// subprotocol, the other headers go into the 101 answer as they are (checked like any
    /// response header). Before it, a `Response` is the denial response (`websocket.http.
    /// response.*`), sent as plain HTTP.
    WsAccept = 21,
    /// An app message (or a piece of one) after `WsAccept`: bytes in the slot (none for an
    /// empty message), `aux` [`WS_TEXT`] or 0 as on `WsMessage`; `MORE`: the message
    /// continues. At most the send window of them unacknowledged (`SendCredit`).
    /// `extra`: `WsMessage` records the app took since the last credit (as `aux` of
    /// `BodyCredit`; 0 for none).
    WsSend = 22,
    /// `websocket.close`: `aux` is the close code, the slot (optional) the UTF-8 reason of
    /// at most 123 bytes. The stream's last record.
    WsClose = 23,
    // ---- worker → front end, request body window (28–30) ----
    /// The app took `aux` (≥ 1) body records of the stream out of the worker's buffer: the
    /// front end may have that many more in flight (the request body window, ring.rs
    /// rule 7). No slot.
    BodyCredit = 28,
}

impl Kind {
    /// Decodes a kind from untrusted shared memory.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Request,
            2 => Self::Body,
            3 => Self::Disconnect,
            4 => Self::Cancel,
            5 => Self::WsConnect,
            6 => Self::WsMessage,
            7 => Self::WsDisconnect,
            8 => Self::SendCredit,
            16 => Self::Response,
            17 => Self::ResponseBody,
            18 => Self::Abort,
            19 => Self::Continue,
            20 => Self::PathSend,
            21 => Self::WsAccept,
            22 => Self::WsSend,
            23 => Self::WsClose,
            28 => Self::BodyCredit,
            _ => return None,
        })
    }
}

/// One ring entry. Plain data: copied out of shared memory once, then validated.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record {
    /// A [`Kind`] as `u8`.
    pub kind: u8,
    /// [`MORE`] or 0.
    pub flags: u8,
    /// `Request`: the stream's response window in records, 1 to [`RESPONSE_WINDOW`]
    /// (0: [`RESPONSE_WINDOW`]; more counts as it). Zero otherwise.
    pub window: u16,
    /// Arena slot index, or [`NO_SLOT`].
    pub slot: u32,
    /// Bytes used in the slot.
    pub len: u32,
    /// Kind-specific: length of the encoded head at the start of the slot.
    pub aux: u32,
    /// The stream (request) this record belongs to, chosen by the front end.
    pub stream: u64,
    /// Kind-specific: the claim of a `Request`, the credit carried by `WsMessage` and
    /// `WsSend`; zero otherwise.
    pub extra: u64,
}

const _: () = assert!(std::mem::size_of::<Record>() == 32);
const _: () = assert!(std::mem::align_of::<Record>() == 8);

impl Record {
    pub fn new(kind: Kind, stream: u64) -> Self {
        Self {
            kind: kind as u8,
            slot: NO_SLOT,
            stream,
            ..Self::default()
        }
    }

    pub fn with_slot(mut self, slot: u32, len: u32, aux: u32) -> Self {
        self.slot = slot;
        self.len = len;
        self.aux = aux;
        self
    }

    pub fn more(mut self, more: bool) -> Self {
        self.flags = (self.flags & !MORE) | if more { MORE } else { 0 };
        self
    }

    pub fn has_more(&self) -> bool {
        self.flags & MORE != 0
    }

    pub fn expect_continue(mut self, on: bool) -> Self {
        if on {
            self.flags |= EXPECT_CONTINUE;
        }
        self
    }

    pub fn expects_continue(&self) -> bool {
        self.flags & EXPECT_CONTINUE != 0
    }

    /// A `Request` whose response may have only `records` unacknowledged (ring.rs rule 7),
    /// fewer than [`RESPONSE_WINDOW`]; 0 or more gives the full window.
    pub fn with_response_window(mut self, records: u32) -> Self {
        self.window = u16::try_from(records.min(RESPONSE_WINDOW)).unwrap_or(0);
        self
    }

    /// The response window a `Request` gives its stream, in records.
    pub fn response_window(&self) -> u32 {
        match u32::from(self.window) {
            0 => RESPONSE_WINDOW,
            n => n.min(RESPONSE_WINDOW),
        }
    }
}
