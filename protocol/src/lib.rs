//! The shared-memory channel between the uringapi front end and its Python workers.
//!
//! One [`segment::Segment`] per worker holds one channel per front-end thread. Each channel
//! carries requests front end → worker and responses worker → front end through
//! single-producer/single-consumer [`ring`]s of fixed-size [`record::Record`]s; payload
//! bytes live in the slots of an [`arena`]. The wire contract is written down at the top of
//! [`ring`]. This crate does no I/O besides creating and mapping memory and ringing eventfds,
//! and knows nothing of HTTP runtimes or Python.

pub mod claim;
pub mod doorbell;
pub mod region;
pub mod ring;
pub mod sync;

#[cfg(not(loom))]
pub mod arena;
#[cfg(not(loom))]
pub mod channel;
#[cfg(not(loom))]
pub mod head;
#[cfg(not(loom))]
pub mod layout;
#[cfg(not(loom))]
pub mod record;
#[cfg(not(loom))]
pub mod segment;

#[cfg(not(loom))]
pub use channel::{ChannelError, FrontChannel, Incoming, WorkerChannel};
#[cfg(not(loom))]
pub use layout::Geometry;
#[cfg(not(loom))]
pub use record::{Kind, Record};
#[cfg(not(loom))]
pub use segment::{OpenError, Segment};
