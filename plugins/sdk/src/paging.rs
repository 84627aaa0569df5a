//! Guarding a listing against an upstream whose pages go round in circles.
//!
//! A broken or hostile API can answer a next-page cursor (or `Link: rel="next"` URL, or
//! `endCursor`) that was already followed, or new cursors that keep bringing the records of a
//! page already read. A connector that trusts it re-reads the same records until the run's
//! deadline (hours) and holds a run slot all that time. [`LoopGuard`] ends such a listing at
//! once with a clear `internal` error ("an unexpected response", `wit/README.md`): nothing of
//! the run is committed, the state stays where the last good run left it.
//!
//! ```ignore
//! let mut guard = LoopGuard::new("issues of repository o/r");
//! while let Some(cursor) = next {
//!     guard.follow(&cursor)?;
//!     let page = fetch(&cursor)?;
//!     guard.page(page.items.len(), &[first_id.as_bytes(), last_id.as_bytes()])?;
//!     …
//! }
//! ```
//!
//! Memory: 8 bytes per cursor and per page of the listing.

use std::collections::HashSet;

use crate::error::{ConnectorError, Result};

/// Consecutive pages without a record a listing may answer before it is taken for a loop.
pub const MAX_EMPTY_PAGES: u32 = 20;

/// The cursors one listing followed and the pages it read, by hash.
#[derive(Debug)]
pub struct LoopGuard {
    subject: String,
    cursors: HashSet<u64>,
    pages: HashSet<u64>,
    read: u64,
    empty_in_a_row: u32,
}

impl LoopGuard {
    /// A guard for one listing; `subject` names it in errors ("issues of repository o/r").
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            cursors: HashSet::new(),
            pages: HashSet::new(),
            read: 0,
            empty_in_a_row: 0,
        }
    }

    /// Call before following `cursor` (a page token, an `endCursor`, a next-page URL): an
    /// `internal` error when this listing followed it already.
    pub fn follow(&mut self, cursor: &str) -> Result<()> {
        if self.cursors.insert(digest(&[cursor.as_bytes()])) {
            return Ok(());
        }
        Err(self.looping(format!(
            "its next-page cursor repeats one already followed (after {} pages)",
            self.read
        )))
    }

    /// Call for each page read: `count` records, identified by `identity` (the page's body
    /// when it is only the records, else e.g. the first and last record's keys). An
    /// `internal` error when a page with records repeats one already read (new cursors, the
    /// same records), or after [`MAX_EMPTY_PAGES`] empty pages in a row.
    pub fn page(&mut self, count: usize, identity: &[&[u8]]) -> Result<()> {
        self.read += 1;
        if count == 0 {
            self.empty_in_a_row += 1;
            if self.empty_in_a_row > MAX_EMPTY_PAGES {
                return Err(self.looping(format!(
                    "{} pages in a row came without a record and still pointed to a next one",
                    self.empty_in_a_row
                )));
            }
            return Ok(());
        }
        self.empty_in_a_row = 0;
        let count = count.to_le_bytes();
        let mut parts = Vec::with_capacity(identity.len() + 1);
        parts.push(count.as_slice());
        parts.extend_from_slice(identity);
        if self.pages.insert(digest(&parts)) {
            return Ok(());
        }
        Err(self.looping(format!(
            "page {} repeats the records of a page already read",
            self.read
        )))
    }

    fn looping(&self, what: String) -> ConnectorError {
        ConnectorError::internal(format!(
            "{}: the upstream's paging goes round in circles: {what}; stopped",
            self.subject
        ))
    }
}

/// A 64-bit digest of `parts` (each length-prefixed). Pages are whole response bodies: SipHash
/// (`DefaultHasher`) of every body was 3 % of a GitHub sync's CPU in the guest, so the bytes go
/// through FxHash's multiply-rotate step on four independent 64-bit lanes (32 bytes a round),
/// folded together with a murmur3 finalizer. Not a defence against crafted collisions, which a
/// hostile upstream does not need: a collision can only end its own listing early, with an error.
fn digest(parts: &[&[u8]]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mix = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    let mut lanes = [1u64, 2, 3, 4];
    for p in parts {
        lanes[0] = mix(lanes[0], p.len() as u64);
        let mut rounds = p.chunks_exact(32);
        for r in &mut rounds {
            for (lane, w) in lanes.iter_mut().zip(r.chunks_exact(8)) {
                *lane = mix(*lane, word(w));
            }
        }
        for w in rounds.remainder().chunks(8) {
            lanes[0] = mix(lanes[0], word(w));
        }
    }
    let mut h = lanes.iter().fold(0u64, |h, lane| mix(h, *lane));
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_followed_twice_is_a_loop() {
        let mut g = LoopGuard::new("teams");
        g.follow("a").unwrap();
        g.follow("b").unwrap();
        let e = g.follow("a").unwrap_err();
        assert!(
            e.message.contains("teams") && e.message.contains("cursor repeats"),
            "{}",
            e.message
        );
    }

    #[test]
    fn new_cursors_bringing_the_same_records_are_a_loop() {
        let mut g = LoopGuard::new("messages of C1");
        g.page(2, &[b"1", b"2"]).unwrap();
        g.page(2, &[b"3", b"4"]).unwrap();
        g.page(1, &[b"1", b"2"]).unwrap();
        let e = g.page(2, &[b"1", b"2"]).unwrap_err();
        assert!(e.message.contains("page 4 repeats"), "{}", e.message);
    }

    #[test]
    fn digests_tell_apart_pages_that_differ_anywhere() {
        let body: Vec<u8> = (0..1000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut seen = HashSet::new();
        assert!(seen.insert(digest(&[&body])));
        for at in 0..body.len() {
            let mut other = body.clone();
            other[at] ^= 1;
            assert!(seen.insert(digest(&[&other])), "a bit flipped at byte {at}");
        }
        for len in 0..body.len() {
            assert!(
                seen.insert(digest(&[&body[..len]])),
                "a prefix of {len} bytes"
            );
        }
        // Where one part ends and the next starts counts.
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
        assert_eq!(digest(&[b"ab", b"c"]), digest(&[b"ab", b"c"]));
    }

    #[test]
    fn empty_pages_are_allowed_up_to_a_bound() {
        let mut g = LoopGuard::new("x");
        for _ in 0..MAX_EMPTY_PAGES {
            g.page(0, &[]).unwrap();
        }
        g.page(1, &[b"a"]).unwrap();
        for _ in 0..MAX_EMPTY_PAGES {
            g.page(0, &[]).unwrap();
        }
        assert!(g.page(0, &[]).is_err());
    }
}
