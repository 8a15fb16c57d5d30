//! What the metrics and the access log keep of the request being served (`Served`).

use super::*;

impl Served {
    /// A new request starts (its first bytes are in); `logging`: keep what the log needs.
    pub(super) fn begin(&mut self, logging: bool) {
        self.started = Some(Instant::now());
        if logging {
            self.log.get_or_insert_with(Box::default).time = Some(std::time::SystemTime::now());
        } else {
            self.log = None;
        }
        self.method.clear();
        self.status = 0;
        self.bytes = 0;
        self.minor = 1;
    }

    pub(super) fn note_head(&mut self, head: &parse::Head<'_>) {
        self.method.extend_from_slice(head.method);
        self.minor = head.minor;
        let Some(log) = self.log.as_mut() else {
            return;
        };
        log.target.clear();
        log.target.extend_from_slice(head.target);
        let find = |name: &[u8]| {
            head.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_vec())
        };
        log.referer = find(b"referer");
        log.user_agent = find(b"user-agent");
        log.request_id.clear();
        // The client's id is logged even without --request-id; a generated one replaces
        // this when there is none.
        if let Some(id) = find(b"x-request-id") {
            log.request_id = String::from_utf8_lossy(&id).into_owned();
        }
    }
}
