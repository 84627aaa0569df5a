//! Giving freed memory back to the system, and keeping big buffers out of the allocator's arenas.

/// The size from which glibc serves an allocation with its own `mmap` (and gives it back with
/// `munmap` when freed): 1 MiB.
pub const MMAP_THRESHOLD_BYTES: i32 = 1 << 20;

/// Free memory at the top of an arena that glibc keeps rather than giving back at once: 2 MiB.
pub const TRIM_THRESHOLD_BYTES: i32 = 2 << 20;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD_BYTES`] (turning off its dynamic threshold)
/// and its trim threshold at [`TRIM_THRESHOLD_BYTES`].
///
/// By default glibc raises the mmap threshold to the size of the largest mapped block freed (up
/// to 32 MiB, and the trim threshold to twice that; `mallopt(3)`, "M_MMAP_THRESHOLD"); from then
/// on the staging buffers and Arrow builders (several MiB each, grown by doubling) live in
/// per-thread arenas, where the freed blocks stay resident in whichever arena a run's thread
/// happened to use. Measured with the service and 20k GitHub issues (`/proc/PID/status` after
/// each of 8 runs): the peak anonymous RSS jumped from 6 to 24-28 MiB on some runs with the
/// dynamic thresholds and stayed at 6 MiB with these. A fixed mmap threshold alone leaves the
/// trim threshold at its 128 KiB default, which gave back and re-faulted the arenas' top on
/// every row group: 18.6k minor page faults a `sluice run` of 20k issues, 10.9k with 2 MiB
/// (`/usr/bin/time -f %R`), for 2 MiB more peak RSS. Call once, first thing in `main`; without
/// glibc it does nothing.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc's allocator parameters, under its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
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
