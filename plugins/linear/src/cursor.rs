//! A stream's incremental state, and how a sweep advances it.
//!
//! State (JSON, checkpointed after every page):
//!
//! ```json
//! {"cursor": "2024-05-01T10:00:00.123Z", "ids": ["…"],
//!  "sweep": {"since": "…", "after": "<endCursor>", "max": "…", "ids": ["…"]}}
//! ```
//!
//! - `cursor`: the newest `updatedAt` of the last *complete* sweep; the next sweep reads
//!   `updatedAt >= cursor` (`gte`: nothing updated in the same millisecond as the last item is
//!   skipped). `ids`: the items of the last sweeps whose `updatedAt` is exactly `cursor`; the
//!   next sweep reads them again (because of `gte`) and drops them, so an unchanged item is not
//!   emitted twice. Over [`MAX_TIED_IDS`] such items, none are remembered and they are emitted
//!   again (the host deduplicates on the primary key: at-least-once, never a skip).
//! - `sweep`: a sweep in progress: its filter (`since`), the Relay cursor of the next page
//!   (`after`), and the newest `updatedAt` seen so far with the ids at it. A run that stops
//!   mid-sweep resumes at `after` with the same filter. The sweep's reading order does not
//!   matter: the cursor only moves when a sweep ends, to the newest value it saw.
//!
//! Why this never skips: an item updated before a sweep starts has `updatedAt <` the sweep's
//! start and is listed by it (it matches the filter); an item updated while the sweep runs
//! either is read by it or gets an `updatedAt` newer than every item the sweep read before
//! the update, hence `>=` the next cursor.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sluice_sdk::serde_json::{self, Value};

/// Most ids remembered at one `updatedAt` instant.
pub const MAX_TIED_IDS: usize = 1000;

/// A stream's state; see the module doc.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Sweep>,
}

/// A sweep in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    /// The filter's lower bound (`gte`), or none: the whole stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The Relay cursor of the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// The newest `updatedAt` seen so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
    /// Ids seen at `max` (empty when more than [`MAX_TIED_IDS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// More than [`MAX_TIED_IDS`] items were seen at `max`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overflow: bool,
}

/// A point in time from Linear's `DateTime` text (`2024-05-01T10:00:00.123Z`): seconds since
/// the epoch and nanoseconds, so texts with other precisions or offsets still compare right.
pub fn instant(text: &str) -> Option<(i64, u32)> {
    let secs = sluice_sdk::time::parse_iso(text)?;
    let nanos = match text.find(['.', ',']) {
        Some(i) => {
            let digits: String = text[i + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .take(9)
                .collect();
            let scale = 10u32.pow(9 - digits.len() as u32);
            digits.parse::<u32>().unwrap_or(0) * scale
        }
        None => 0,
    };
    Some((secs, nanos))
}

/// Compares two `DateTime` texts in time; an unreadable one sorts first.
pub fn compare(a: &str, b: &str) -> Ordering {
    instant(a).cmp(&instant(b))
}

impl State {
    /// The state as checkpointed, or a fresh one when absent or unreadable (a full sweep).
    pub fn load(value: Option<&Value>) -> Self {
        value
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// The sweep to run: the one in progress, or a new one from `cursor` (or `start`, the
    /// configured start date, when the stream was never read).
    pub fn begin(&self, start: Option<&str>) -> Sweep {
        self.sweep.clone().unwrap_or_else(|| Sweep {
            since: self.cursor.clone().or_else(|| start.map(str::to_string)),
            ..Sweep::default()
        })
    }

    /// Whether an item was already emitted by an earlier sweep: it sits exactly at the cursor
    /// and its id is remembered.
    pub fn already_emitted(&self, id: &str, updated_at: &str) -> bool {
        match &self.cursor {
            Some(cursor) => {
                compare(updated_at, cursor) == Ordering::Equal && self.ids.iter().any(|i| i == id)
            }
            None => false,
        }
    }

    /// The state to checkpoint mid-sweep.
    pub fn during(&self, sweep: &Sweep) -> Self {
        Self {
            sweep: Some(sweep.clone()),
            ..self.clone()
        }
    }

    /// The state once `sweep` has read the last page: the cursor moves to the newest value
    /// seen (never back), with the ids at it.
    pub fn finish(&self, sweep: &Sweep) -> Self {
        let (cursor, ids) = match (&self.cursor, &sweep.max) {
            (_, None) => (self.cursor.clone(), self.ids.clone()),
            (None, Some(max)) => (Some(max.clone()), sweep.tied()),
            (Some(cursor), Some(max)) => match compare(max, cursor) {
                Ordering::Greater => (Some(max.clone()), sweep.tied()),
                Ordering::Less => (Some(cursor.clone()), self.ids.clone()),
                Ordering::Equal => {
                    let ids = if sweep.overflow {
                        Vec::new()
                    } else {
                        let all: BTreeSet<String> =
                            self.ids.iter().chain(&sweep.ids).cloned().collect();
                        if all.len() > MAX_TIED_IDS {
                            Vec::new()
                        } else {
                            all.into_iter().collect()
                        }
                    };
                    (Some(cursor.clone()), ids)
                }
            },
        };
        Self {
            cursor,
            ids,
            sweep: None,
        }
    }
}

impl Sweep {
    /// Notes an emitted item.
    pub fn see(&mut self, id: &str, updated_at: &str) {
        if instant(updated_at).is_none() {
            return;
        }
        let order = match &self.max {
            None => Ordering::Greater,
            Some(max) => compare(updated_at, max),
        };
        match order {
            Ordering::Greater => {
                self.max = Some(updated_at.to_string());
                self.ids = vec![id.to_string()];
                self.overflow = false;
            }
            Ordering::Equal if !self.overflow => {
                if !self.ids.iter().any(|i| i == id) {
                    self.ids.push(id.to_string());
                }
                if self.ids.len() > MAX_TIED_IDS {
                    self.ids.clear();
                    self.overflow = true;
                }
            }
            _ => {}
        }
    }

    /// The ids to remember at `max`.
    fn tied(&self) -> Vec<String> {
        if self.overflow {
            Vec::new()
        } else {
            self.ids.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::json;

    #[test]
    fn instants_compare_in_time() {
        assert_eq!(instant("1970-01-01T00:00:01.5Z"), Some((1, 500_000_000)));
        assert_eq!(
            compare("2024-05-01T10:00:00.120Z", "2024-05-01T10:00:00.12Z"),
            Ordering::Equal
        );
        assert_eq!(
            compare("2024-05-01T12:00:00.001+02:00", "2024-05-01T10:00:00.000Z"),
            Ordering::Greater
        );
        assert_eq!(
            compare("2024-05-01T10:00:00.999Z", "2024-05-01T10:00:01Z"),
            Ordering::Less
        );
        assert_eq!(instant("soon"), None);
    }

    #[test]
    fn a_sweep_moves_the_cursor_to_the_newest_item_and_remembers_ties() {
        let fresh = State::load(None);
        let mut sweep = fresh.begin(Some("2024-01-01T00:00:00.000Z"));
        assert_eq!(sweep.since.as_deref(), Some("2024-01-01T00:00:00.000Z"));
        sweep.see("a", "2024-02-01T00:00:00.000Z");
        sweep.see("b", "2024-03-01T00:00:00.000Z");
        sweep.see("c", "2024-03-01T00:00:00.000Z");
        sweep.see("d", "2024-01-15T00:00:00.000Z");
        let mid = fresh.during(&sweep);
        assert_eq!(mid.cursor, None);
        let done = fresh.finish(&sweep);
        assert_eq!(done.cursor.as_deref(), Some("2024-03-01T00:00:00.000Z"));
        assert_eq!(done.ids, ["b", "c"]);
        assert_eq!(done.sweep, None);
        // The next sweep starts at the cursor (gte) and drops b and c unless they changed.
        let next = done.begin(None);
        assert_eq!(next.since.as_deref(), Some("2024-03-01T00:00:00.000Z"));
        assert!(done.already_emitted("b", "2024-03-01T00:00:00.000Z"));
        assert!(!done.already_emitted("b", "2024-03-01T00:00:00.001Z"));
        assert!(
            !done.already_emitted("e", "2024-03-01T00:00:00.000Z"),
            "a new item in the same millisecond is read"
        );
        // A sweep that only finds a new tie keeps the cursor and adds it.
        let mut tie = next.clone();
        tie.see("e", "2024-03-01T00:00:00.000Z");
        assert_eq!(done.finish(&tie).ids, ["b", "c", "e"]);
        // A sweep that finds nothing keeps everything.
        assert_eq!(done.finish(&next), done);
    }

    #[test]
    fn states_round_trip_and_resume_mid_sweep() {
        let mut sweep = Sweep {
            since: Some("2024-01-01T00:00:00.000Z".into()),
            after: Some("page-2".into()),
            ..Sweep::default()
        };
        sweep.see("a", "2024-02-01T00:00:00.000Z");
        let state = State::default().during(&sweep);
        let json = serde_json::to_value(&state).expect("json");
        assert_eq!(
            json,
            json!({"sweep": {"since": "2024-01-01T00:00:00.000Z", "after": "page-2", "max": "2024-02-01T00:00:00.000Z", "ids": ["a"]}})
        );
        let back = State::load(Some(&json));
        assert_eq!(back.begin(None), sweep, "a resumed run continues the sweep");
        assert_eq!(State::load(Some(&json!("garbage"))), State::default());
    }

    #[test]
    fn too_many_ties_are_forgotten_not_skipped() {
        let mut sweep = Sweep::default();
        for i in 0..=MAX_TIED_IDS {
            sweep.see(&format!("i{i}"), "2024-03-01T00:00:00.000Z");
        }
        assert!(sweep.overflow && sweep.ids.is_empty());
        let done = State::default().finish(&sweep);
        assert_eq!(done.cursor.as_deref(), Some("2024-03-01T00:00:00.000Z"));
        assert!(done.ids.is_empty(), "they are read again next time");
        assert!(!done.already_emitted("i1", "2024-03-01T00:00:00.000Z"));
        // A newer item ends the overflow.
        sweep.see("n", "2024-03-02T00:00:00.000Z");
        assert!(!sweep.overflow);
        assert_eq!(sweep.ids, ["n"]);
    }
}
