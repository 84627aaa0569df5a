//! Requests of queued runs, sealed for the shared queue.
//!
//! In replicated mode a run submitted to one replica may execute on another, so its request —
//! config, credentials, storage keys — travels through PostgreSQL. It is stored sealed with
//! XChaCha20-Poly1305 (RFC 8439 AEAD with the extended 24-byte nonce of
//! draft-irtf-cfrg-xchacha) under `SLUICE_RUN_SECRETS_KEY`, which every replica holds and the
//! database does not; the run id is the associated data, so a sealed request copied onto
//! another row does not open. The column is cleared when the run ends.

use std::collections::BTreeMap;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::target::StorageSpec;

/// Bytes of the nonce stored before the ciphertext.
const NONCE_BYTES: usize = 24;

/// Why a key or a sealed request is unusable (never contains key or plaintext bytes).
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "SLUICE_RUN_SECRETS_KEY must be 64 hex characters (32 random bytes, e.g. `openssl rand -hex 32`)"
    )]
    BadKey,
    #[error(
        "the sealed request does not open with this replica's SLUICE_RUN_SECRETS_KEY (a different key, or a damaged row)"
    )]
    Open,
    #[error("sealing failed: {0}")]
    Seal(String),
}

/// The key every replica shares (`SLUICE_RUN_SECRETS_KEY`).
pub struct SealKey(XChaCha20Poly1305, String);

impl SealKey {
    /// From 64 hex characters.
    pub fn from_hex(hex_key: &str) -> Result<Self, SealError> {
        let bytes = Zeroizing::new(hex::decode(hex_key.trim()).map_err(|_| SealError::BadKey)?);
        if bytes.len() != 32 {
            return Err(SealError::BadKey);
        }
        if bytes.iter().all(|b| *b == bytes[0]) {
            return Err(SealError::BadKey);
        }
        let id = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(b"sluice run secrets key id\0");
            h.update(&*bytes);
            hex::encode(&h.finalize()[..8])
        };
        XChaCha20Poly1305::new_from_slice(&bytes)
            .map(|k| Self(k, id))
            .map_err(|_| SealError::BadKey)
    }

    /// A public identifier of the key (16 hex characters of a domain-separated SHA-256), so
    /// replicas can compare keys without revealing them.
    pub fn id(&self) -> &str {
        &self.1
    }

    /// `nonce ‖ ciphertext` of the request, bound to `run_id`.
    pub fn seal(&self, run_id: &str, request: &RunRequest) -> Result<Vec<u8>, SealError> {
        let plain = Zeroizing::new(
            serde_json::to_vec(request).map_err(|e| SealError::Seal(e.to_string()))?,
        );
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: run_id.as_bytes(),
                },
            )
            .map_err(|e| SealError::Seal(e.to_string()))?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(out)
    }

    /// Opens what [`SealKey::seal`] sealed for `run_id`.
    pub fn open(&self, run_id: &str, sealed: &[u8]) -> Result<RunRequest, SealError> {
        if sealed.len() < NONCE_BYTES {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let plain = Zeroizing::new(
            self.0
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: run_id.as_bytes(),
                    },
                )
                .map_err(|_| SealError::Open)?,
        );
        serde_json::from_slice(&plain).map_err(|_| SealError::Open)
    }
}

/// What a replica needs to execute a queued run it did not admit.
#[derive(Serialize, Deserialize)]
pub struct RunRequest {
    pub config: Value,
    pub credentials: BTreeMap<String, Zeroizing<String>>,
    pub streams: Vec<String>,
    pub full_refresh: bool,
    pub storage: StorageSpec,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RunRequest {
        RunRequest {
            config: serde_json::json!({"owner": "acme"}),
            credentials: BTreeMap::from([("token".into(), Zeroizing::new("ghp_secret".into()))]),
            streams: vec!["issues".into()],
            full_refresh: false,
            storage: serde_json::from_value(serde_json::json!({"bucket": "b", "prefix": "p"}))
                .unwrap(),
        }
    }

    #[test]
    fn opens_only_with_the_key_and_the_run_it_was_sealed_for() {
        let key = SealKey::from_hex(&"0123456789abcdef".repeat(4)).unwrap();
        let sealed = key.seal("run-1", &request()).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("ghp_secret"));
        let opened = key.open("run-1", &sealed).unwrap();
        assert_eq!(opened.credentials["token"].as_str(), "ghp_secret");
        assert!(matches!(key.open("run-2", &sealed), Err(SealError::Open)));
        let other = SealKey::from_hex(&"fedcba9876543210".repeat(4)).unwrap();
        assert_ne!(key.id(), other.id());
        assert!(matches!(other.open("run-1", &sealed), Err(SealError::Open)));
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(key.open("run-1", &damaged), Err(SealError::Open)));
        assert!(matches!(
            key.open("run-1", &sealed[..10]),
            Err(SealError::Open)
        ));
    }

    #[test]
    fn keys_are_32_bytes_of_hex() {
        assert!(SealKey::from_hex(&"0123456789abcdef".repeat(4)).is_ok());
        assert!(SealKey::from_hex(&"ab".repeat(16)).is_err());
        assert!(SealKey::from_hex(&"00".repeat(32)).is_err());
        assert!(SealKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
