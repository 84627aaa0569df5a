//! The compile cache's bookkeeping: artifact names, leases on artifacts in use, and collection
//! (artifacts of versions no longer present, of other engines, superseded baseline code, then
//! least recently used past the size cap).
//!
//! An artifact is `{sha256}-{tier}-{engine key}.cwasm`: the sha256 of the component's bytes, the
//! compiler tier (`baseline`, `optimized`), and a hash of the tier and the engine's
//! compatibility hash, so that artifacts of different tiers or engine settings never collide.
//! "Last used" is the file's modification time, set when an artifact is loaded from the cache
//! and when its last user lets go of it (access times are unreliable under `noatime`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// The compiler a plugin's code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Winch, wasmtime's baseline compiler: compiles several times faster than Cranelift, its
    /// code runs slower. A first load (no optimized artifact cached) serves on it at once.
    Baseline,
    /// Cranelift, the optimizing compiler. Replaces baseline code when its background compile
    /// is done; a cached optimized artifact is used directly.
    Optimized,
}

impl Tier {
    /// `baseline` or `optimized`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Optimized => "optimized",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "baseline" => Ok(Self::Baseline),
            "optimized" => Ok(Self::Optimized),
            other => Err(format!("unknown tier {other:?}: baseline or optimized")),
        }
    }
}

/// The file name of an artifact.
pub(crate) fn artifact_name(sha256: &str, tier: Tier, key: &str) -> String {
    format!("{sha256}-{tier}-{key}.cwasm")
}

/// `(sha256, tier, key)` of an artifact's file name; `None` for any other file (scratch files
/// of compiles under way or interrupted).
fn parse_artifact_name(name: &str) -> Option<(&str, Tier, &str)> {
    let stem = name.strip_suffix(".cwasm")?;
    let mut parts = stem.splitn(3, '-');
    let (sha, tier, key) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !(hex(sha, 64) && hex(key, 16)) {
        return None;
    }
    Some((sha, tier.parse().ok()?, key))
}

/// Artifacts in use, by path, with their number of users. An artifact with a user is never
/// collected: it belongs to a loaded plugin version (or to a compile or load under way).
#[derive(Default)]
pub(crate) struct Leases(Mutex<HashMap<PathBuf, usize>>);

/// One use of an artifact; the artifact's "last used" time is set when the last use ends.
pub(crate) struct Lease {
    leases: Arc<Leases>,
    path: PathBuf,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Lease").field(&self.path).finish()
    }
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, usize>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A use of the artifact at `path`, whether or not it exists yet (a compile takes one
    /// before it writes the file, so that no collection removes it before it is loaded).
    pub fn take(self: &Arc<Self>, path: &Path) -> Lease {
        *self.lock().entry(path.to_path_buf()).or_default() += 1;
        Lease {
            leases: self.clone(),
            path: path.to_path_buf(),
        }
    }

    /// A use of the artifact at `path` if it exists (under the lock collection holds, so it is
    /// not removed between the check and the load); marks it used now.
    pub fn take_existing(self: &Arc<Self>, path: &Path) -> Option<Lease> {
        let mut map = self.lock();
        if !path.is_file() {
            return None;
        }
        *map.entry(path.to_path_buf()).or_default() += 1;
        drop(map);
        touch(path);
        Some(Lease {
            leases: self.clone(),
            path: path.to_path_buf(),
        })
    }

    /// Whether the artifact at `path` has a user.
    #[cfg(test)]
    pub fn in_use(&self, path: &Path) -> bool {
        self.lock().contains_key(path)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut map = self.leases.lock();
        let last = match map.get_mut(&self.path) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                map.remove(&self.path);
                true
            }
            None => false,
        };
        drop(map);
        if last {
            touch(&self.path);
        }
    }
}

/// Sets a file's modification time (its "last used" here) to now; best effort.
fn touch(path: &Path) {
    let _ = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
}

/// What one collection found and removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes left in the cache directory.
    pub kept_bytes: u64,
    /// Files left.
    pub kept_files: usize,
    /// Bytes removed.
    pub removed_bytes: u64,
    /// Files removed.
    pub removed_files: usize,
    /// Bytes of artifacts in use (never removed; they may keep the cache over its cap).
    pub in_use_bytes: u64,
}

/// What a collection may remove besides the least recently used past the cap.
pub(crate) struct Collect<'a> {
    /// The cache directory.
    pub dir: &'a Path,
    /// The size cap, bytes.
    pub max_bytes: u64,
    /// Engine keys of this runtime, by tier.
    pub keys: &'a [(Tier, &'a str)],
    /// The sha256 of every plugin version present (loaded by the registry). When given,
    /// artifacts of other versions, of other engines (other settings or wasmtime versions),
    /// and baseline artifacts whose optimized one exists are removed when not in use.
    pub present: Option<&'a HashSet<String>>,
    /// Scratch files older than this are from interrupted compiles.
    pub scratch_age: Duration,
}

struct Entry {
    path: PathBuf,
    size: u64,
    used: SystemTime,
    in_use: bool,
}

impl Leases {
    /// Collects the cache as `c` says; holds the lease lock throughout, so that no artifact
    /// is taken into use while it is being removed.
    pub fn collect(&self, c: &Collect<'_>) -> CacheStats {
        let map = self.lock();
        let mut stats = CacheStats::default();
        let Ok(read) = std::fs::read_dir(c.dir) else {
            return stats;
        };
        let now = SystemTime::now();
        let mut entries = Vec::new();
        let mut parsed = Vec::new();
        for e in read.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let entry = Entry {
                in_use: map.contains_key(&path),
                size: meta.len(),
                used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                path,
            };
            match parse_artifact_name(&name) {
                Some((sha, tier, key)) => {
                    parsed.push((sha.to_string(), tier, key.to_string()));
                    entries.push(entry);
                }
                None => {
                    let old = now
                        .duration_since(entry.used)
                        .is_ok_and(|age| age > c.scratch_age);
                    if old
                        && !entry.in_use
                        && remove(&entry, "scratch file of an interrupted compile", &mut stats)
                    {
                        continue;
                    }
                    stats.kept_bytes += entry.size;
                    stats.kept_files += 1;
                    if entry.in_use {
                        stats.in_use_bytes += entry.size;
                    }
                }
            }
        }
        let optimized_key = c
            .keys
            .iter()
            .find(|(t, _)| *t == Tier::Optimized)
            .map(|k| k.1);
        let has_optimized: HashSet<&str> = parsed
            .iter()
            .filter(|(_, t, k)| *t == Tier::Optimized && Some(k.as_str()) == optimized_key)
            .map(|(s, _, _)| s.as_str())
            .collect();
        let mut candidates = Vec::new();
        for (entry, (sha, tier, key)) in entries.into_iter().zip(parsed.iter()) {
            if !entry.in_use
                && let Some(present) = c.present
            {
                let why = if !c.keys.iter().any(|(t, k)| t == tier && k == key) {
                    Some("compiled by other engine settings or another wasmtime version")
                } else if !present.contains(sha.as_str()) {
                    Some("plugin version no longer present")
                } else if *tier == Tier::Baseline && has_optimized.contains(sha.as_str()) {
                    Some("baseline code superseded by the optimized artifact")
                } else {
                    None
                };
                if let Some(why) = why
                    && remove(&entry, why, &mut stats)
                {
                    continue;
                }
            }
            stats.kept_bytes += entry.size;
            stats.kept_files += 1;
            if entry.in_use {
                stats.in_use_bytes += entry.size;
            } else {
                candidates.push(entry);
            }
        }
        // Least recently used first.
        candidates.sort_by_key(|e| e.used);
        for entry in candidates {
            if stats.kept_bytes <= c.max_bytes {
                break;
            }
            if remove(
                &entry,
                "least recently used past the cache's cap",
                &mut stats,
            ) {
                stats.kept_bytes -= entry.size;
                stats.kept_files -= 1;
            }
        }
        if stats.kept_bytes > c.max_bytes {
            tracing::warn!(
                kept_mib = stats.kept_bytes >> 20,
                in_use_mib = stats.in_use_bytes >> 20,
                max_mib = c.max_bytes >> 20,
                "compile cache over its cap (SLUICE_COMPILE_CACHE_MIB): the artifacts of loaded plugins alone take more"
            );
        }
        stats
    }
}

/// Removes a file; counts it when it went.
fn remove(entry: &Entry, why: &str, stats: &mut CacheStats) -> bool {
    match std::fs::remove_file(&entry.path) {
        Ok(()) => {
            tracing::info!(file = %entry.path.display(), bytes = entry.size, "compile cache: removed ({why})");
            stats.removed_bytes += entry.size;
            stats.removed_files += 1;
            true
        }
        Err(e) => {
            tracing::warn!(file = %entry.path.display(), "compile cache: cannot remove: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const SHA_C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    const OPT: &str = "0123456789abcdef";
    const BASE: &str = "fedcba9876543210";
    const OLD: &str = "1111111111111111";

    fn write(dir: &Path, name: &str, size: usize, age_secs: u64) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, vec![0u8; size]).unwrap();
        let t = SystemTime::now() - Duration::from_secs(age_secs);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
        p
    }

    fn collect(
        dir: &Path,
        leases: &Leases,
        max: u64,
        present: Option<&HashSet<String>>,
    ) -> CacheStats {
        leases.collect(&Collect {
            dir,
            max_bytes: max,
            keys: &[(Tier::Optimized, OPT), (Tier::Baseline, BASE)],
            present,
            scratch_age: Duration::from_secs(600),
        })
    }

    #[test]
    fn names_round_trip_and_other_files_are_not_artifacts() {
        let n = artifact_name(SHA_A, Tier::Baseline, BASE);
        assert_eq!(parse_artifact_name(&n), Some((SHA_A, Tier::Baseline, BASE)));
        assert_ne!(
            n,
            artifact_name(SHA_A, Tier::Optimized, BASE),
            "tiers never collide"
        );
        for other in [
            format!("{SHA_A}-optimized-{OPT}.in12-3.wasm"),
            format!("{SHA_A}-fast-{OPT}.cwasm"),
            format!("{SHA_A}-{OPT}.cwasm"),
            "notes.txt".to_string(),
        ] {
            assert_eq!(parse_artifact_name(&other), None, "{other}");
        }
    }

    #[test]
    fn least_recently_used_go_first_and_artifacts_in_use_stay() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let leases = Arc::new(Leases::default());
        let oldest = write(d, &artifact_name(SHA_A, Tier::Optimized, OPT), 1000, 300);
        let old = write(d, &artifact_name(SHA_B, Tier::Optimized, OPT), 1000, 200);
        let new = write(d, &artifact_name(SHA_C, Tier::Optimized, OPT), 1000, 100);
        // The oldest is in use: the next oldest goes instead.
        let lease = leases.take(&oldest);
        let s = collect(d, &leases, 2000, None);
        assert_eq!(
            (s.removed_files, s.kept_bytes, s.in_use_bytes),
            (1, 2000, 1000)
        );
        assert!(oldest.is_file() && !old.exists() && new.is_file());
        // A cap below what is in use: only what is not in use goes.
        let s = collect(d, &leases, 0, None);
        assert_eq!((s.removed_files, s.kept_bytes), (1, 1000));
        assert!(oldest.is_file() && !new.exists());
        drop(lease);
        assert!(!leases.in_use(&oldest));
        let s = collect(d, &leases, 0, None);
        assert_eq!((s.removed_files, s.kept_files), (1, 0));
    }

    #[test]
    fn versions_no_longer_present_other_engines_and_superseded_baselines_go() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let leases = Arc::new(Leases::default());
        let a_opt = write(d, &artifact_name(SHA_A, Tier::Optimized, OPT), 10, 0);
        let a_base = write(d, &artifact_name(SHA_A, Tier::Baseline, BASE), 10, 0);
        let b_base = write(d, &artifact_name(SHA_B, Tier::Baseline, BASE), 10, 0);
        let b_other = write(d, &artifact_name(SHA_B, Tier::Optimized, OLD), 10, 0);
        let gone = write(d, &artifact_name(SHA_C, Tier::Optimized, OPT), 10, 0);
        let gone_in_use = leases.take(&gone);
        let scratch_old = write(d, &format!("{SHA_B}-optimized-{OPT}.in1-1.wasm"), 10, 3600);
        let scratch_new = write(d, &format!("{SHA_B}-optimized-{OPT}.in1-2.wasm"), 10, 0);
        let present: HashSet<String> = [SHA_A.to_string(), SHA_B.to_string()].into();
        let s = collect(d, &leases, u64::MAX, Some(&present));
        assert!(a_opt.is_file(), "present, optimized");
        assert!(!a_base.exists(), "superseded by the optimized artifact");
        assert!(b_base.is_file(), "present, no optimized artifact yet");
        assert!(!b_other.exists(), "another engine's");
        assert!(gone.is_file(), "not present but in use");
        assert!(!scratch_old.exists() && scratch_new.is_file());
        assert_eq!(s.removed_files, 3);
        drop(gone_in_use);
        collect(d, &leases, u64::MAX, Some(&present));
        assert!(!gone.exists(), "no longer in use, not present");
        // Without the present set (a runtime without a registry), only the cap applies.
        let c_opt = write(d, &artifact_name(SHA_C, Tier::Optimized, OPT), 10, 0);
        collect(d, &leases, u64::MAX, None);
        assert!(c_opt.is_file());
    }
}
