//! The threads plugin work runs on, apart from the ones that serve HTTP.
//!
//! Runs (every plugin call, staging each emitted batch into typed columns, Parquet row groups,
//! the commit) and the plugin calls of API requests (`validate`, `discover`) run on one
//! process-wide Tokio runtime of their own, [`spawn`]ed there, never on the runtime that
//! accepts connections and answers `/health` and `/ready`. Much of that work runs in long
//! stretches that do not yield: a batch of 50 records of 20,000 columns is parsed in one
//! `records.emit` host call, a row group of 20,000 columns is written in one go. On the
//! service's own worker threads (one in a pod with a CPU limit of 500m: Tokio sizes its pool by
//! the cgroup's quota) two such runs kept `/health` waiting up to 1.36 s.
//!
//! The work threads run at nice 10 (`setpriority` on each thread as it starts, which Linux
//! applies per thread and which needs no privilege): when both want the CPU, the kernel
//! prefers the HTTP threads, so a probe is answered while a run computes. Their number is
//! Tokio's default, the CPUs the process may use (`TOKIO_WORKER_THREADS` overrides it, as for
//! the HTTP runtime); the blocking pool's threads (`spawn_blocking` from a run) are niced too.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;

/// Niceness of the work threads (the compile child's, too).
pub const WORK_NICENESS: libc::c_int = 10;

static WORK: OnceLock<Runtime> = OnceLock::new();

/// The work runtime, started on first use; it lives as long as the process.
///
/// # Panics
/// When the operating system refuses the runtime's threads or its I/O driver at the first use
/// (the process cannot do any work then).
pub fn handle() -> &'static Handle {
    WORK.get_or_init(|| {
        Builder::new_multi_thread()
            .thread_name("sluice-work")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            // The service cannot run without threads; this is at start-up or the first run.
            .unwrap_or_else(|e| panic!("starting the work runtime: {e}"))
    })
    .handle()
}

/// Runs `task` on the work runtime, in the caller's tracing span.
pub fn spawn<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    handle().spawn(tracing::Instrument::in_current_span(task))
}

fn lower_priority() {
    // SAFETY: setpriority reads its arguments only; on Linux, who = 0 is the calling thread.
    // A refusal (a seccomp profile without it) leaves the thread at the default priority.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, WORK_NICENESS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn work_runs_on_niced_threads_of_its_own() {
        assert_ne!(std::thread::current().name(), Some("sluice-work"));
        let (name, nice) = spawn(async {
            // SAFETY: getpriority reads its arguments only.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            (std::thread::current().name().map(String::from), nice)
        })
        .await
        .expect("the task ran");
        assert_eq!(name.as_deref(), Some("sluice-work"));
        assert!(nice >= WORK_NICENESS, "work thread at nice {nice}");
        let blocking = spawn(async {
            // SAFETY: getpriority reads its arguments only.
            tokio::task::spawn_blocking(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) })
                .await
        })
        .await
        .expect("the task ran")
        .expect("the blocking task ran");
        assert!(
            blocking >= WORK_NICENESS,
            "blocking thread at nice {blocking}"
        );
    }
}
