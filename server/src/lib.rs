//! The uringapi front end: io_uring HTTP/1.1 threads, the dispatcher that feeds Python
//! workers through shared-memory channels, and the supervisor that runs those workers.
#![deny(unsafe_code)]

pub mod accesslog;
pub mod body_window;
pub mod cli;
mod commands;
pub mod connlimit;
mod deadline;
pub mod dispatch;
pub mod failure;
pub mod frontend;
pub mod h2;
pub mod http1;
pub mod load;
pub mod metrics;
pub mod native;
pub mod net;
pub mod proxy;
pub mod statics;
pub mod supervisor;
mod sys;
pub mod tls;
pub mod waitq;
pub mod ws;
pub mod zerocopy;

pub use commands::main_from_args;
