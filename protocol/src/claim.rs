//! Claim words: who runs a request that sits in a worker's ring, the worker (claim) or the
//! front end taking it back (revoke). The rules are ring.rs rules 8 to 10.
//!
//! A word is `tag << 2 | state`: `tag` numbers the use of the word (never 0, advanced by the
//! front end for every request it queues on the word), `state` is [`QUEUED`], [`RUNNING`]
//! or [`REVOKED`]. Both sides move the word only by a compare-and-swap from
//! `QUEUED` with the tag they were given, so exactly one of them wins, and a word moved on
//! to a newer tag turns a stale attempt into a plain failure.

use crate::sync::{AtomicU64, Ordering};

pub const QUEUED: u64 = 1;
pub const RUNNING: u64 = 2;
pub const REVOKED: u64 = 3;

fn word(tag: u32, state: u64) -> u64 {
    (u64::from(tag) << 2) | state
}

/// Front end, before it publishes the `Request` record naming (`index`, `tag`): the word
/// now says "queued, use `tag`".
pub fn queue(w: &AtomicU64, tag: u32) {
    // SYNC: rule 8. Relaxed: the record that names the tag is published afterwards with the
    // ring's Release store (rule 1), and the worker's Acquire load of `tail` (rule 2) makes
    // this store visible before the worker can try to claim it.
    w.store(word(tag, QUEUED), Ordering::Relaxed);
}

/// Worker, as the request's task starts: true if it is the worker's to run; false if the
/// front end took it back (or the word was moved on): the request must not run.
pub fn claim(w: &AtomicU64, tag: u32) -> bool {
    // SYNC: rule 9. One CAS from QUEUED(tag); AcqRel so that a failed revoke on the front
    // end reads a RUNNING that happens-after this claim.
    w.compare_exchange(
        word(tag, QUEUED),
        word(tag, RUNNING),
        Ordering::AcqRel,
        Ordering::Acquire,
    )
    .is_ok()
}

/// Front end, on a stalled worker: true if the request was taken back (the worker will not
/// run it and the front end may send it elsewhere); false if the worker claimed it first,
/// or the word holds anything else (a worker-written word is untrusted, rule 10: anything
/// but QUEUED(tag) means "leave it with the worker").
pub fn revoke(w: &AtomicU64, tag: u32) -> bool {
    // SYNC: rule 9, the other side of the same CAS.
    w.compare_exchange(
        word(tag, QUEUED),
        word(tag, REVOKED),
        Ordering::AcqRel,
        Ordering::Acquire,
    )
    .is_ok()
}

/// `Record::extra` of a revocable `Request`: the claim word's index and its tag. 0 (tag 0)
/// means "no claim word: run it".
pub fn encode(index: u32, tag: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(index)
}

/// (index, tag) from `Record::extra`; `None` when the request carries no claim.
pub fn decode(extra: u64) -> Option<(u32, u32)> {
    let tag = (extra >> 32) as u32;
    (tag != 0).then_some((extra as u32, tag))
}

/// Tags run 1..=2^30-1 and wrap, skipping 0 (which means "no claim").
pub fn next_tag(tag: u32) -> u32 {
    let next = (tag + 1) & ((1 << 30) - 1);
    next.max(1)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_of_claim_and_revoke_wins() {
        let w = AtomicU64::new(0);
        queue(&w, 7);
        assert!(claim(&w, 7));
        assert!(!revoke(&w, 7));
        queue(&w, 8);
        assert!(revoke(&w, 8));
        assert!(!claim(&w, 8));
    }

    #[test]
    fn a_stale_tag_never_wins() {
        let w = AtomicU64::new(0);
        queue(&w, 1);
        assert!(revoke(&w, 1));
        queue(&w, 2);
        assert!(
            !claim(&w, 1),
            "a claim for the revoked use must fail on the reused word"
        );
        assert!(claim(&w, 2));
    }

    #[test]
    fn garbage_is_never_revoked() {
        let w = AtomicU64::new(u64::MAX);
        assert!(!revoke(&w, 3));
        assert_eq!(decode(0), None);
        assert_eq!(decode(encode(5, 9)), Some((5, 9)));
        assert_eq!(next_tag((1 << 30) - 1), 1);
    }
}
