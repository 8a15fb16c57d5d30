//! HTTP/1.x: request head parsing, body framing, response head encoding and the
//! connection state machine that ties them to the channel.

pub mod conn;
pub mod encode;
pub mod framing;
pub mod parse;
