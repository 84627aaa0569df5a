//! Giving freed memory back to the system.

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
