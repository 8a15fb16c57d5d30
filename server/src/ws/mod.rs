//! WebSocket protocol (RFC 6455, permessage-deflate of RFC 7692), as pure functions and state
//! machines over byte slices: no socket, no runtime. The connection loop that drives them from
//! monoio's buffers is a separate piece (not wired yet: an upgrade still reaches the app as
//! plain HTTP).
//!
//! Split by job: [`handshake`] (the opening handshake), [`frame`] (frame headers and masking),
//! [`utf8`] (incremental UTF-8 validation across fragments), [`close`] (close codes and
//! payloads), [`deflate`] (extension negotiation and per-message compression) and [`message`]
//! (frames in, whole messages and control events out, with every protocol check) and
//! [`send`] (the app's messages, pongs, pings and close frames out).

pub mod close;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod send;
pub mod utf8;
