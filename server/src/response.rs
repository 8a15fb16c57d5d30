//! What the front end takes of a worker's response whatever the protocol (HTTP/1.1 or
//! HTTP/2): the rules a response head must keep to, and the file an
//! `http.response.pathsend` names.

/// A response head from a worker that must not reach the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("status {0} is not a final status (200..=599)")]
    Status(u16),
    #[error("header name {0:?} is not a token")]
    Name(String),
    #[error("header {0:?} has CR, LF or NUL in its value")]
    Value(String),
    #[error("invalid content-length {0:?}")]
    ContentLength(String),
    #[error("content-length given twice, as {0} and {1}")]
    ContentLengths(u64, u64),
}

/// Takes one content-length field of a response head into what the head declared so far
/// (`declared`): digits only, and the same number however often it is given (RFC 9110
/// §8.6). `Ok(false)`: a repeat of the number already declared.
pub fn declare_length(declared: &mut Option<u64>, value: &[u8]) -> Result<bool, BadResponse> {
    let n = std::str::from_utf8(value.trim_ascii())
        .ok()
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u64>().ok())
        .ok_or_else(|| BadResponse::ContentLength(String::from_utf8_lossy(value).into_owned()))?;
    match declared.replace(n) {
        Some(m) if m != n => Err(BadResponse::ContentLengths(m, n)),
        repeat => Ok(repeat.is_none()),
    }
}

/// Opens a file named by `http.response.pathsend`: an absolute path to a regular file, read
/// with the front end's own permissions (the worker could read it as well).
pub async fn open_file(path: &[u8]) -> Result<(monoio::fs::File, u64), String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
    if !path.is_absolute() {
        return Err("the path is not absolute (ASGI requires an absolute path)".into());
    }
    use std::os::unix::fs::OpenOptionsExt as _;
    // O_NONBLOCK: a FIFO would otherwise hold the open (on the legacy driver, the thread)
    // until a writer came; `regular_file` refuses it and clears the flag for a file.
    let file = monoio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .await
        .map_err(|e| format!("cannot open the file: {e}"))?;
    let len = crate::sys::regular_file(&file).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => e.to_string(),
        _ => format!("cannot stat the file: {e}"),
    })?;
    Ok((file, len))
}
