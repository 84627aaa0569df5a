//! Giving freed memory back to the system, and keeping it in one arena.

/// Returns the allocator's free memory to the system. glibc keeps what compilation threads
/// freed in per-thread arenas: about 30 MiB stayed resident after compiling one plugin
/// (scripts/bench-github.sh, idle RSS of the service). Called after a compile and after a
/// run's staging, the two big transient users of the heap.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists, under the arena locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes glibc's allocator serve every thread from one arena (`mallopt(M_ARENA_MAX, 1)`,
/// `mallopt(3)`), unless the operator set glibc's own `MALLOC_ARENA_MAX`, which then stands.
///
/// By default glibc gives threads arenas of their own (up to 8 per core). A sync's buffers
/// (the emitted batches, Arrow builders, Parquet row groups, HTTP bodies) are allocated on
/// whichever tokio worker runs the call at the moment and return to that thread's arena, so
/// each arena grows to its own peak and one's free space cannot serve another. Measured on
/// the service over 20k-issue GitHub syncs (fresh prefixes; `/proc/PID/smaps` by mapping: the
/// anon pages were two ~11 MiB glibc heaps, the plugin's memory 0.6 MiB): peak anon 22–29 →
/// 15–17 MiB, VmHWM 61.6–64.2 → 53.5–54.5 MiB, service CPU 0.38 s both ways
/// (`MALLOC_ARENA_MAX=16` vs unset, `scripts/bench-github.sh 20000 5`, load 3–5); 20
/// concurrent syncs 82 → 74 MiB (`scripts/bench-concurrent.sh 20 20000`). Small blocks still
/// come from each thread's tcache without the arena's lock. Call before any other thread
/// starts; without glibc it does nothing.
pub fn single_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets glibc's allocator parameters, under its own lock.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
