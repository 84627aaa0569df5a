//! `sluice plugin keygen|sign|verify`: minisign keys and detached signatures for plugin files
//! (`sluice_runtime::signing`). With `SLUICE_TRUSTED_KEYS` set, `serve` loads only signed files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sluice_runtime::signing::{self, TrustedKeys};

/// The plugin size `serve` accepts by default (`SLUICE_MAX_PLUGIN_MIB`, 64).
const MAX_PLUGIN_BYTES: u64 = 64 << 20;

/// `keygen`: writes `{prefix}.key` (an unencrypted minisign secret key, mode 0600) and
/// `{prefix}.pub` (its public key file), and prints the line `SLUICE_TRUSTED_KEYS` takes.
pub fn keygen(prefix: &Path) -> anyhow::Result<()> {
    let (public, secret) = signing::generate().map_err(anyhow::Error::msg)?;
    let pub_path = with_suffix(prefix, "pub");
    let key_path = with_suffix(prefix, "key");
    for p in [&pub_path, &key_path] {
        // symlink_metadata: a dangling link counts as existing too.
        anyhow::ensure!(
            std::fs::symlink_metadata(p).is_err(),
            "{} exists; not overwritten",
            p.display()
        );
    }
    // Both files are created exclusively; a failure on the second removes the first, so a
    // half pair is never left behind.
    write_new(&key_path, &secret, 0o600)?;
    if let Err(e) = write_new(&pub_path, &public, 0o644) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
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
    let bytes = read_capped(file, MAX_PLUGIN_BYTES)?;
    let secret =
        String::from_utf8_lossy(&read_capped(key, signing::MAX_SIGNATURE_BYTES)?).into_owned();
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sig = signing::sign(&bytes, &secret, &name).map_err(anyhow::Error::msg)?;
    let sig_path = signing::signature_path(file);
    // Written beside it and renamed over: atomic, and a symlink at the name is replaced,
    // never followed.
    let tmp = with_suffix(&sig_path, &format!("tmp{}", std::process::id()));
    write_new(&tmp, &sig, 0o644)?;
    std::fs::rename(&tmp, &sig_path).with_context(|| format!("writing {}", sig_path.display()))?;
    println!("signed: {}", sig_path.display());
    Ok(())
}

/// `verify`: checks `{file}.minisig` against `keys` (the `SLUICE_TRUSTED_KEYS` text); exits 1
/// with the reason when it fails. Reads are capped as in `serve`.
pub fn verify(file: &Path, keys: &str) -> anyhow::Result<()> {
    let refuse = |why: String| -> ! {
        eprintln!("refused: {}: {why}", file.display());
        std::process::exit(1)
    };
    let keys =
        TrustedKeys::parse(keys).unwrap_or_else(|e| refuse(format!("SLUICE_TRUSTED_KEYS: {e}")));
    let bytes = read_capped(file, MAX_PLUGIN_BYTES).unwrap_or_else(|e| refuse(format!("{e:#}")));
    let sig_path = signing::signature_path(file);
    let sig = match std::fs::metadata(&sig_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => refuse(format!("{}: {e}", sig_path.display())),
        Ok(m) if !m.is_file() => refuse(format!("{} is not a regular file", sig_path.display())),
        Ok(_) => Some(
            read_capped(&sig_path, signing::MAX_SIGNATURE_BYTES)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|e| refuse(format!("{e:#}"))),
        ),
    };
    let name = sig_path.display().to_string();
    match keys.verify(&bytes, sig.as_deref(), &name) {
        Ok(key) => {
            println!("ok: {} signed by key {key}", file.display());
            Ok(())
        }
        Err(e) => refuse(e.to_string()),
    }
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// A regular file's bytes, refused past `max` (a FIFO or `/dev/zero` is never read whole).
fn read_capped(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(meta.is_file(), "{} is not a regular file", path.display());
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= max,
        "{} is larger than {max} bytes",
        path.display()
    );
    Ok(bytes)
}

/// Creates `path` (never over an existing file or link) with `mode`, and writes `text`.
fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
