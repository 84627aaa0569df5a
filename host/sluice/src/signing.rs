//! `sluice plugin keygen|sign|verify`: minisign keys and detached signatures for plugin files
//! (`sluice_runtime::signing`). With `SLUICE_TRUSTED_KEYS` set, `serve` loads only signed files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sluice_runtime::signing::{self, TrustedKeys};

/// `keygen`: writes `{prefix}.pub` (a minisign public key file) and `{prefix}.key` (its
/// unencrypted secret key, mode 0600), and prints the line `SLUICE_TRUSTED_KEYS` takes.
pub fn keygen(prefix: &Path) -> anyhow::Result<()> {
    let (public, secret) = signing::generate().map_err(anyhow::Error::msg)?;
    let pub_path = with_suffix(prefix, "pub");
    let key_path = with_suffix(prefix, "key");
    for p in [&pub_path, &key_path] {
        anyhow::ensure!(!p.exists(), "{} exists; not overwritten", p.display());
    }
    std::fs::write(&pub_path, &public)
        .with_context(|| format!("writing {}", pub_path.display()))?;
    write_private(&key_path, &secret)?;
    let line = signing::public_key_line(&public).map_err(anyhow::Error::msg)?;
    println!(
        "public key: {} (SLUICE_TRUSTED_KEYS={line})",
        pub_path.display()
    );
    println!(
        "secret key: {} (keep it out of images and repositories)",
        key_path.display()
    );
    Ok(())
}

/// `sign`: writes `{file}.minisig` with the secret key file `key`.
pub fn sign(file: &Path, key: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let secret =
        std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sig = signing::sign(&bytes, &secret, &name).map_err(anyhow::Error::msg)?;
    let sig_path = signing::signature_path(file);
    std::fs::write(&sig_path, sig).with_context(|| format!("writing {}", sig_path.display()))?;
    println!("signed: {}", sig_path.display());
    Ok(())
}

/// `verify`: checks `{file}.minisig` against `keys`; exits 1 with the reason when it fails.
pub fn verify(file: &Path, keys: &TrustedKeys) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let sig_path = signing::signature_path(file);
    let sig = match std::fs::read_to_string(&sig_path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", sig_path.display())),
    };
    let name = sig_path.display().to_string();
    match keys.verify(&bytes, sig.as_deref(), &name) {
        Ok(key) => {
            println!("ok: {} signed by key {key}", file.display());
            Ok(())
        }
        Err(e) => {
            eprintln!("refused: {}: {e}", file.display());
            std::process::exit(1);
        }
    }
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
