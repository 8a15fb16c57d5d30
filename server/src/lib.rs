//! The uringapi front end as a library: io_uring HTTP/1.1 and HTTP/2 threads, the dispatcher
//! that feeds Python workers through shared-memory channels, and the supervisor that runs
//! those workers. It is driven by plain config structs (`config`); the `uringapi` command
//! that parses flags into them is the `uringapi-cli` crate (`server/cli/`).
#![deny(unsafe_code)]

pub mod accesslog;
pub mod body_window;
pub mod config;
pub mod connlimit;
mod deadline;
pub mod dispatch;
pub mod failure;
pub mod frontend;
pub mod h2;
pub mod http1;
pub mod load;
pub mod logthrottle;
pub mod metrics;
pub mod native;
pub mod net;
pub mod proxy;
pub mod response;
pub mod statics;
pub mod supervisor;
mod sys;
pub mod tls;
pub mod waitq;
pub mod ws;
pub mod zerocopy;
