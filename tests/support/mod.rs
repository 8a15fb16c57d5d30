//! Helpers shared by the workspace integration tests. Each `[[test]]` uses only part of
//! them, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod process;
pub mod traffic;
