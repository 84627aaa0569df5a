//! Giving freed memory back to the system, and keeping big buffers out of the allocator's arenas.

/// The size from which glibc serves an allocation with its own `mmap` (and gives it back with
/// `munmap` when freed): 1 MiB.
pub const MMAP_THRESHOLD_BYTES: i32 = 1 << 20;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD_BYTES`], turning off its dynamic threshold.
///
/// By default glibc raises the threshold to the size of the largest mapped block freed (up to
/// 32 MiB, `mallopt(3)`, "M_MMAP_THRESHOLD"); from then on the staging buffers and Arrow builders
/// (several MiB each, grown by doubling) live in per-thread arenas, where regrowth copies and
/// the freed blocks stay resident in whichever arena a run's thread happened to use. Measured
/// with the service and 20k GitHub issues (`/proc/PID/status` after each of 8 runs): the peak
/// anonymous RSS jumped from 6 to 24-28 MiB on some runs with the dynamic threshold, and
/// stayed at 6 MiB with a fixed 1 MiB one, at the same CPU time. Call once, first thing in
/// `main`; without glibc it does nothing.
pub fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc's allocator parameters, under its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

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
