//! What Sluice remembers of the keys it obtained: token id, service, user and expiry — never the
//! key. Kept in memory only: after a restart a disconnect still revokes (the service knows the
//! token), but its audit event has no user.

use std::collections::HashMap;
use std::sync::Mutex;

use time::OffsetDateTime;

/// The most records kept; past it expired ones are dropped, then the oldest.
pub const MAX_RECORDS: usize = 100_000;

/// One issued token, as Sluice remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub service: String,
    pub token_id: String,
    pub user_email: String,
    pub expires_at: OffsetDateTime,
    pub connected_at: OffsetDateTime,
}

/// Token records by (service, token id).
#[derive(Debug, Default)]
pub struct TokenBook {
    records: Mutex<HashMap<(String, String), TokenRecord>>,
}

impl TokenBook {
    pub fn insert(&self, record: TokenRecord) {
        let Ok(mut map) = self.records.lock() else {
            return;
        };
        if map.len() >= MAX_RECORDS {
            let now = OffsetDateTime::now_utc();
            map.retain(|_, r| r.expires_at > now);
        }
        if map.len() >= MAX_RECORDS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, r)| r.connected_at)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert((record.service.clone(), record.token_id.clone()), record);
    }

    /// Forgets a token; returns what was remembered of it.
    pub fn remove(&self, service: &str, token_id: &str) -> Option<TokenRecord> {
        self.records
            .lock()
            .ok()?
            .remove(&(service.to_string(), token_id.to_string()))
    }

    pub fn get(&self, service: &str, token_id: &str) -> Option<TokenRecord> {
        self.records
            .lock()
            .ok()?
            .get(&(service.to_string(), token_id.to_string()))
            .cloned()
    }

    /// Live (unexpired) tokens of a service.
    pub fn count(&self, service: &str) -> usize {
        let now = OffsetDateTime::now_utc();
        self.records.lock().map_or(0, |m| {
            m.values()
                .filter(|r| r.service == service && r.expires_at > now)
                .count()
        })
    }
}
