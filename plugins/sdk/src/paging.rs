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
use std::hash::{DefaultHasher, Hash, Hasher};

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
        let mut parts = vec![count.to_le_bytes().to_vec()];
        parts.extend(identity.iter().map(|p| p.to_vec()));
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        if self.pages.insert(digest(&refs)) {
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

fn digest(parts: &[&[u8]]) -> u64 {
    let mut h = DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
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
