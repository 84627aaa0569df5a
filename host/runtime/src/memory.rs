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

/// Makes glibc keep the heap a one-sync process frees for its own reuse, instead of handing it
/// back to the kernel and faulting fresh zeroed pages in again at the next row group
/// (`mallopt(3)`: `M_MMAP_THRESHOLD` 32 MiB, glibc's largest on 64-bit, so buffers up to that
/// come from the heap, not from an `mmap` that `free` unmaps; `M_TRIM_THRESHOLD` 256 MiB, so
/// freed space at the heap's top stays; `M_TOP_PAD` 16 MiB per heap extension). For `sluice
/// run`, which exits after one sync (20k GitHub issues: CPU 0.93x, peak RSS +3 MiB); the service
/// keeps glibc's defaults and trims after each run ([`release_freed`]). Overrides glibc's own
/// `GLIBC_TUNABLES` for these three. Without glibc it does nothing.
pub fn keep_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc's allocator parameters, under its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
    }
}

/// Drops this program's own code and read-only data pages from the process's resident set
/// (`madvise(MADV_DONTNEED)` on the executable's loaded segments that are never written: the
/// ELF's `PT_LOAD` segments without `PF_W`; the relocated `RELRO` data is not among them). The
/// pages stay in the page cache, shared with every other process of the binary; the code that
/// runs next maps its pages back with minor faults (no I/O while the file is cached).
///
/// Why: the kernel maps 64 KiB around each code page a thread touches (fault-around), and
/// startup (argument parsing, config checks, the engine, plugin loading, TLS setup) touches
/// code spread over every crate of a ~40 MB `.text` that a sync never runs again. Those pages
/// stayed mapped for the life of the process and were most of its peak RSS: a `sluice run` of
/// 50,000 HubSpot contacts peaked at 45 MiB with 29 MiB of them the binary's file pages,
/// 18–20 MiB once they are dropped when the sync starts. Called where a new phase begins
/// (a local run's sync, the service once it serves, a run's uploads).
///
/// `SLUICE_KEEP_CODE_PAGES=1` turns it off (e.g. under a debugger or uprobes, whose breakpoints
/// live in private copies of code pages that this would discard). Without glibc it does nothing.
pub fn release_code_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    {
        if std::env::var_os("SLUICE_KEEP_CODE_PAGES").is_some_and(|v| v != "0") {
            return;
        }
        // SAFETY: dl_iterate_phdr hands the callback the loader's own, valid program headers;
        // the callback only reads them and advises the kernel about read-only mappings.
        unsafe {
            libc::dl_iterate_phdr(Some(drop_readonly_segments), std::ptr::null_mut());
        }
    }
}

/// `dl_iterate_phdr` callback: advises `MADV_DONTNEED` for the main program's loaded segments
/// that are not writable, then stops (the main program comes first).
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
unsafe extern "C" fn drop_readonly_segments(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    _data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: `info` and its `dlpi_phnum` headers are valid for this call (dl_iterate_phdr).
    let info = unsafe { &*info };
    if info.dlpi_phdr.is_null() {
        return 1;
    }
    // SAFETY: as above.
    let headers =
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    // SAFETY: sysconf only reads a constant.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as u64,
        _ => return 1,
    };
    let pages = |h: &libc::Elf64_Phdr| {
        let start = (info.dlpi_addr + h.p_vaddr) & !(page - 1);
        (
            start,
            (info.dlpi_addr + h.p_vaddr + h.p_memsz).div_ceil(page) * page,
        )
    };
    let loaded = || {
        headers
            .iter()
            .filter(|h| h.p_type == libc::PT_LOAD && h.p_memsz > 0)
    };
    for h in loaded().filter(|h| h.p_flags & libc::PF_W == 0) {
        let (mut start, mut end) = pages(h);
        // A page a writable segment shares (none, with the usual linkers) is left alone.
        for (ws, we) in loaded().filter(|w| w.p_flags & libc::PF_W != 0).map(pages) {
            if ws < end && we > start {
                if ws > start {
                    end = ws;
                } else {
                    start = we.min(end);
                }
            }
        }
        if start >= end {
            continue;
        }
        // SAFETY: [start, end) is a read-only file mapping of this program that nothing has
        // written (no PF_W); MADV_DONTNEED only unmaps its pages, which the next access maps
        // again from the same file. A failure leaves them mapped, as before.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                (end - start) as libc::size_t,
                libc::MADV_DONTNEED,
            );
        }
    }
    1
}

#[cfg(all(
    test,
    target_os = "linux",
    target_env = "gnu",
    target_pointer_width = "64"
))]
mod tests {
    /// This process's file-backed resident memory, in KiB (`RssFile` of /proc/self/status).
    fn rss_file_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn code_pages_are_released_and_the_program_runs_on() {
        // Touch code and read-only data all over the test binary first.
        let text = format!(
            "{:?}",
            std::collections::BTreeMap::from([(1, "a"), (2, "b")])
        );
        let before = rss_file_kib();
        super::release_code_pages();
        let after = rss_file_kib();
        assert!(
            after + 256 < before,
            "RssFile {before} KiB before, {after} KiB after: the code pages stayed mapped"
        );
        // Code, read-only data and the relocated data (vtables through dyn) still work.
        let shown: Box<dyn std::fmt::Debug> = Box::new(vec![text.len(), 3]);
        assert_eq!(format!("{shown:?}"), "[16, 3]");
        assert_eq!(text, r#"{1: "a", 2: "b"}"#);
    }
}
