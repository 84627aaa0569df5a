//! Signed plugins: a detached signature beside each file, `{file}.minisig`, in the format of
//! the `minisign` tool (Ed25519 over the file's BLAKE2b-512 prehash; <https://jedisct1.github.io/minisign/>),
//! made and checked with the `minisign` crate by minisign's author. Keys are minisign keys, so
//! `minisign -S` / `minisign -V` and `sluice plugin sign` / `verify` are interchangeable.
//!
//! With trusted keys configured (`SLUICE_TRUSTED_KEYS`), a plugin loads only if its signature
//! verifies with one of them; otherwise [`crate::LoadError::Signature`] says why: unsigned,
//! unreadable signature, signed by a key not trusted, or a signature that does not match the
//! bytes (tampered).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use minisign::{KeyPair, PublicKey, SecretKeyBox, SignatureBox};

/// The largest signature file read, in bytes (a minisign signature is ~300).
pub const MAX_SIGNATURE_BYTES: u64 = 8 << 10;

/// Why a plugin's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("unsigned: no {0} beside it")]
    Unsigned(String),
    #[error("unreadable signature: {0}")]
    Malformed(String),
    #[error("signed by key {0}, which is not among SLUICE_TRUSTED_KEYS")]
    UntrustedKey(String),
    #[error(
        "the signature does not match the file (tampered, or re-signed without updating the signature)"
    )]
    Mismatch,
}

/// The public keys plugins must be signed with.
#[derive(Clone)]
pub struct TrustedKeys(Vec<PublicKey>);

impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.0.iter().map(|k| key_id(k.keynum())).collect();
        f.debug_tuple("TrustedKeys").field(&ids).finish()
    }
}

impl TrustedKeys {
    /// Parses keys separated by commas or whitespace, each the base64 line of a minisign
    /// public key file (`RW…`). Errors name the bad entry by position.
    pub fn parse(list: &str) -> Result<Self, String> {
        let keys = list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|k| !k.is_empty())
            .enumerate()
            .map(|(i, k)| {
                // A public key line is 56 characters; a secret key line is far longer. The
                // value is never repeated in the error (it may be a secret key pasted by mistake).
                if k.len() > 64 {
                    return Err(format!(
                        "trusted key {} is {} characters, longer than a public key (56): is it a secret key? Use the RW… line of the .pub file",
                        i + 1,
                        k.len()
                    ));
                }
                PublicKey::from_base64(k).map_err(|e| format!("trusted key {}: {e}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("no trusted key given".into());
        }
        Ok(Self(keys))
    }

    /// Key ids (hex, as minisign prints them), for the configuration report.
    pub fn ids(&self) -> Vec<String> {
        self.0.iter().map(|k| key_id(k.keynum())).collect()
    }

    /// Checks `signature` (the text of `{file}.minisig`, `None` when there is none) over
    /// `bytes`. Returns the id of the key that signed.
    pub fn verify(
        &self,
        bytes: &[u8],
        signature: Option<&str>,
        sig_name: &str,
    ) -> Result<String, SignatureError> {
        let text = signature.ok_or_else(|| SignatureError::Unsigned(sig_name.to_string()))?;
        let sig = SignatureBox::from_string(text)
            .map_err(|e| SignatureError::Malformed(e.to_string()))?;
        let id = key_id(sig.keynum());
        let key = self
            .0
            .iter()
            .find(|k| k.keynum() == sig.keynum())
            .ok_or_else(|| SignatureError::UntrustedKey(id.clone()))?;
        minisign::verify(key, &sig, Cursor::new(bytes), true, false, false)
            .map_err(|_| SignatureError::Mismatch)?;
        Ok(id)
    }
}

/// `{file}.minisig`.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}

/// A new key pair, as the texts of a minisign public key file and an unencrypted secret key
/// file (keep the latter out of the image and the repository).
pub fn generate() -> Result<(String, String), String> {
    let KeyPair { pk, sk } = KeyPair::generate_unencrypted_keypair().map_err(|e| e.to_string())?;
    let public = pk.to_box().map_err(|e| e.to_string())?.to_string();
    let secret = sk
        .to_box(Some("sluice plugin signing key"))
        .map_err(|e| e.to_string())?
        .to_string();
    Ok((public, secret))
}

/// Signs `bytes` with the secret key file's text (unencrypted); the `.minisig` text.
pub fn sign(bytes: &[u8], secret_key: &str, file_name: &str) -> Result<String, String> {
    if minisign::PublicKeyBox::from_string(secret_key)
        .and_then(|b| b.into_public_key())
        .is_ok()
    {
        return Err("this is a public key file; sign with the secret key (PREFIX.key)".into());
    }
    let sk = SecretKeyBox::from_string(secret_key)
        .and_then(SecretKeyBox::into_unencrypted_secret_key)
        .map_err(|e| format!("secret key: {e} (an unencrypted minisign secret key file, as `sluice plugin keygen` writes)"))?;
    let comment = format!("file:{file_name}");
    minisign::sign(None, &sk, Cursor::new(bytes), Some(&comment), None)
        .map(|s| s.to_string())
        .map_err(|e| e.to_string())
}

/// A public key file's base64 line (what `SLUICE_TRUSTED_KEYS` takes).
pub fn public_key_line(public_key_file: &str) -> Result<String, String> {
    let pk = minisign::PublicKeyBox::from_string(public_key_file)
        .and_then(|b| b.into_public_key())
        .map_err(|e| format!("public key: {e}"))?;
    Ok(pk.to_base64())
}

fn key_id(keynum: &[u8]) -> String {
    // minisign prints the key id as the little-endian 64-bit number in upper-case hex.
    keynum.iter().rev().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_unsigned_tampered_and_wrong_key() {
        let (pub_a, sec_a) = generate().unwrap();
        let (pub_b, sec_b) = generate().unwrap();
        let keys = TrustedKeys::parse(&public_key_line(&pub_a).unwrap()).unwrap();
        let bytes = b"\0asm component bytes".to_vec();
        let sig = sign(&bytes, &sec_a, "x.wasm").unwrap();
        assert!(keys.verify(&bytes, Some(&sig), "x.wasm.minisig").is_ok());
        assert!(matches!(
            keys.verify(&bytes, None, "x.wasm.minisig"),
            Err(SignatureError::Unsigned(_))
        ));
        let mut tampered = bytes.clone();
        tampered[3] ^= 1;
        assert_eq!(
            keys.verify(&tampered, Some(&sig), "x.wasm.minisig"),
            Err(SignatureError::Mismatch)
        );
        let other = sign(&bytes, &sec_b, "x.wasm").unwrap();
        assert!(matches!(
            keys.verify(&bytes, Some(&other), "x.wasm.minisig"),
            Err(SignatureError::UntrustedKey(_))
        ));
        assert!(matches!(
            keys.verify(&bytes, Some("not a signature"), "x.wasm.minisig"),
            Err(SignatureError::Malformed(_))
        ));
        // Both keys, comma- or space-separated.
        let both = format!(
            "{}, {}",
            public_key_line(&pub_a).unwrap(),
            public_key_line(&pub_b).unwrap()
        );
        let keys = TrustedKeys::parse(&both).unwrap();
        assert!(keys.verify(&bytes, Some(&other), "x").is_ok());
        assert!(TrustedKeys::parse("RWnotakey").is_err());
        // A secret key pasted by mistake is named as such and never echoed.
        let secret_line = sec_a.lines().nth(1).unwrap();
        let e = TrustedKeys::parse(secret_line).unwrap_err();
        assert!(
            e.contains("secret key") && !e.contains(&secret_line[..20]),
            "{e}"
        );
        // Signing with the public key file says so.
        assert!(
            sign(&bytes, &pub_a, "x")
                .unwrap_err()
                .contains("public key file")
        );
        assert!(TrustedKeys::parse(" , ").is_err());
    }
}
