//! The one error type of start-up: an `error:` line, a `hint:` line, and the exit code,
//! which the `uringapi` command (`uringapi-cli`) prints and exits with. A module of its own
//! so that the modules that fail with it do not depend on each other for it.

/// A failure to report as `error: …` / `hint: …` with a non-zero exit code.
#[derive(Debug)]
pub struct Failure {
    pub error: String,
    pub hint: String,
    pub code: u8,
}

impl Failure {
    pub fn new(error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            hint: hint.into(),
            code: 1,
        }
    }
}
