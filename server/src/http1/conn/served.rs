//! What the metrics and the access log keep of the request being served (`Served`).

use super::*;

impl Served {
    /// A new request starts (its first bytes are in); `logging`: keep what the log needs.
    pub(super) fn begin(&mut self, logging: bool) {
        self.started = Some(Instant::now());
        self.time = logging.then(std::time::SystemTime::now);
        self.method.clear();
        self.status = 0;
        self.bytes = 0;
        self.minor = 1;
    }

    pub(super) fn note_head(&mut self, head: &parse::Head<'_>) {
        self.method.extend_from_slice(head.method);
        self.minor = head.minor;
        if self.time.is_none() {
            return;
        }
        self.target.clear();
        self.target.extend_from_slice(head.target);
        let find = |name: &[u8]| {
            head.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_vec())
        };
        self.referer = find(b"referer");
        self.user_agent = find(b"user-agent");
        self.request_id.clear();
        // The client's id is logged even without --request-id; a generated one replaces
        // this when there is none.
        if let Some(id) = find(b"x-request-id") {
            self.request_id = String::from_utf8_lossy(&id).into_owned();
        }
    }
}
