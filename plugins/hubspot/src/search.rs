//! Incremental reads through the CRM search API (`POST /crm/v3/objects/{objectType}/search`,
//! "CRM API | Search", developers.hubspot.com).
//!
//! What the docs say, and what follows from it:
//! - a query returns at most 10,000 results (paging past that is HTTP 400) and pages of at most
//!   200 (`limit`);
//! - filters inside a `filterGroups` entry are ANDed (groups are ORed);
//! - recently changed records reach the search index after a short lag;
//! - search requests are limited per account (~5/s; the host paces them, see
//!   `host/runtime/src/outbound.rs`).
//!
//! So a sync reads a **window** of modification times `[from, to)`: `from` is where the last
//! sync ended minus a look-back (records that were still invisible to search then), `to` is
//! HubSpot's own clock (`Date`) when the sync began, so a record changed during the sync
//! falls into the next window and is never skipped. Inside the window records are read in
//! `hs_object_id` order, **keyset-paged**: each page is a new query with
//! `hs_object_id > last id seen`, never an `after` offset. No query ever reaches the
//! 10,000-result cap, however many records share one modification time (25,000 contacts
//! touched by one bulk update), each record of the window comes exactly once, and the
//! position (`after_id`) is checkpointed after every page, so a restarted run resumes
//! there. The order relies on one sort, by `hs_object_id`, which HubSpot honours (the
//! modification-time sort is documented as unreliable past the cap; filtering on it is not).

use serde::{Deserialize, Serialize};
use sluice_sdk::json;
use sluice_sdk::serde_json::Value;

/// Largest page the search API returns (`limit`).
pub const PAGE_LIMIT: u32 = 200;

/// A window of modification times being read, and how far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Inclusive lower bound, epoch milliseconds (`None`: from the beginning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    /// Exclusive upper bound, epoch milliseconds (`None`: no bound; HubSpot sent no `Date`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
    /// The largest `hs_object_id` read so far in this window (a decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_id: Option<String>,
    /// A read of everything through the list endpoint: the paging cursor (`paging.next.after`)
    /// of its next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_after: Option<String>,
}

impl Window {
    /// Whether the window holds every record (no lower bound) and no search of it began: it
    /// can then be read through the list endpoint.
    pub fn reads_everything(&self) -> bool {
        self.from.is_none() && self.after_id.is_none()
    }
}

/// The state of an object stream, checkpointed after each page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectState {
    /// Every record modified before this instant (epoch ms) was read, but for search lag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_to: Option<i64>,
    /// The window in progress, if a run stopped inside one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// Records archived before this instant (epoch ms) were emitted: HubSpot's clock when the
    /// last archive listing began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_to: Option<i64>,
}

impl ObjectState {
    /// The committed state of a stream; an unreadable one counts as none (a full read).
    pub fn from_json(state: Option<&Value>) -> Self {
        state
            .and_then(|s| Self::deserialize(s).ok())
            .unwrap_or_default()
    }

    /// The window this run reads: the one in progress, or `[synced_to - lookback, now)`
    /// (`[start, now)` on a first sync; `start` may be `None`: everything).
    pub fn next_window(&self, lookback_ms: i64, start: Option<i64>, now: Option<i64>) -> Window {
        if let Some(window) = &self.window {
            return window.clone();
        }
        let from = match self.synced_to {
            Some(to) => Some(
                to.saturating_sub(lookback_ms)
                    .max(start.unwrap_or(i64::MIN)),
            ),
            None => start,
        };
        Window {
            from,
            to: now,
            after_id: None,
            list_after: None,
        }
    }
}

/// Whether decimal id `a` comes after `b` (numerically; HubSpot ids are integers).
pub fn id_after(a: &str, b: &str) -> bool {
    match (a.parse::<u128>(), b.parse::<u128>()) {
        (Ok(a), Ok(b)) => a > b,
        _ => (a.len(), a) > (b.len(), b),
    }
}

/// The search request body for the next page of `window` on `modified` (the object type's
/// last-modified property): the window's bounds and the keyset position ANDed in one filter
/// group, sorted by `hs_object_id`, asking for `properties`.
///
/// `sorts` items are `{propertyName, direction}` objects, as the search guide documents; the
/// OpenAPI description types them as strings, which HubSpot ignores (HubSpot's own clients:
/// hubspot-api-nodejs#14, hubspot-api-ruby#257). `after` is required by the description and is
/// always `"0"`: paging is by filter, not by offset.
pub fn search_body(modified: &str, window: &Window, properties: &[String]) -> Value {
    let mut filters = Vec::new();
    if let Some(from) = window.from {
        filters
            .push(json!({"propertyName": modified, "operator": "GTE", "value": from.to_string()}));
    }
    if let Some(to) = window.to {
        filters.push(json!({"propertyName": modified, "operator": "LT", "value": to.to_string()}));
    }
    if let Some(id) = &window.after_id {
        filters.push(json!({"propertyName": "hs_object_id", "operator": "GT", "value": id}));
    }
    let filter_groups = if filters.is_empty() {
        json!([])
    } else {
        json!([{ "filters": filters }])
    };
    json!({
        "filterGroups": filter_groups,
        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
        "properties": properties,
        "limit": PAGE_LIMIT,
        "after": "0",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_resume_or_start_after_the_last_one() {
        let none = ObjectState::default();
        assert_eq!(
            none.next_window(60_000, None, Some(9_000_000)),
            Window {
                from: None,
                to: Some(9_000_000),
                after_id: None,
                list_after: None,
            }
        );
        assert_eq!(none.next_window(60_000, Some(5), None).from, Some(5));
        let done = ObjectState {
            synced_to: Some(1_000_000),
            ..Default::default()
        };
        let w = done.next_window(60_000, None, Some(2_000_000));
        assert_eq!((w.from, w.to), (Some(940_000), Some(2_000_000)));
        assert_eq!(
            done.next_window(60_000, Some(990_000), None).from,
            Some(990_000)
        );
        let mid = ObjectState {
            synced_to: Some(1),
            window: Some(Window {
                from: Some(7),
                to: Some(8),
                after_id: Some("42".into()),
                list_after: None,
            }),
            archived_to: None,
        };
        assert_eq!(
            mid.next_window(0, None, Some(99)).after_id.as_deref(),
            Some("42")
        );
        let round =
            ObjectState::from_json(Some(&sluice_sdk::serde_json::to_value(&mid).expect("json")));
        assert_eq!(round, mid);
        assert_eq!(
            ObjectState::from_json(Some(&json!("junk"))),
            ObjectState::default()
        );
    }

    #[test]
    fn search_bodies_filter_the_window_and_the_keyset() {
        let w = Window {
            from: Some(100),
            to: Some(200),
            after_id: Some("17".into()),
            list_after: None,
        };
        let body = search_body("lastmodifieddate", &w, &["email".into()]);
        assert_eq!(
            body["filterGroups"],
            json!([{"filters": [
                {"propertyName": "lastmodifieddate", "operator": "GTE", "value": "100"},
                {"propertyName": "lastmodifieddate", "operator": "LT", "value": "200"},
                {"propertyName": "hs_object_id", "operator": "GT", "value": "17"}
            ]}])
        );
        assert_eq!(body["sorts"][0]["propertyName"], "hs_object_id");
        assert_eq!(body["limit"], 200);
        assert_eq!(body["after"], "0");
        assert_eq!(body["properties"], json!(["email"]));
        let open = search_body(
            "hs_lastmodifieddate",
            &Window {
                from: None,
                to: None,
                after_id: None,
                list_after: None,
            },
            &[],
        );
        assert_eq!(open["filterGroups"], json!([]));
    }

    #[test]
    fn ids_compare_as_numbers() {
        assert!(id_after("10", "9"));
        assert!(!id_after("9", "10"));
        assert!(!id_after("10", "10"));
    }
}
