//! Serving the router over HTTP/1 with limits that slow or idle clients cannot get around.
//!
//! [`serve`] replaces `axum::serve`, which sets no timer and so no timeouts, and accepts every
//! connection: slow clients kept their connections for ever and could use up the process's file
//! descriptors. Here:
//! - a client must send a complete request head within the header-read timeout, and a
//!   keep-alive connection is closed once it has been idle that long (hyper ≥ 1.6 starts the
//!   header-read timer again when a connection goes idle after a response);
//! - at most `max_connections` connections are open at once. At the cap the accept loop waits
//!   for a connection to end, so new connections queue in the kernel's listen backlog instead
//!   of failing, and are served in arrival order.
//!
//! [`raise_nofile_limit`] and [`connection_cap`] size the cap below the descriptor limit.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Descriptors kept free for everything that is not an HTTP connection: plugin files, the
/// compile cache, DuckDB and its spill files, S3 and upstream connections, logs.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// The smallest connection cap [`connection_cap`] returns.
pub const MIN_CONNECTIONS: usize = 16;

/// Limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Longest time a client may take to send a complete request head, counted from the moment
    /// the connection is accepted or, on a keep-alive connection, from the end of the previous
    /// response (so it is also the idle timeout). The connection is closed without an answer
    /// when it passes.
    pub header_read_timeout: Duration,
    /// Most connections open at once (at least 1). At the cap, new connections wait in the
    /// listen backlog until one ends.
    pub max_connections: usize,
}

/// Serves `router` on `listener` over HTTP/1 with `limits` until `shutdown` completes.
///
/// Then it stops accepting, closes the listener, lets every open connection finish the request
/// it is serving (idle keep-alive connections close at once; one still sending its request head
/// gets at most the header-read timeout) and returns when all are closed, as
/// `axum::serve(..).with_graceful_shutdown(..)` did.
///
/// Accept errors are not returned: a failed handshake is skipped; any other error (such as
/// `EMFILE`, out of descriptors) is logged and accepting pauses for a second, as in `axum::serve`.
pub async fn serve<F>(listener: TcpListener, router: Router, limits: ServeLimits, shutdown: F)
where
    F: Future<Output = ()> + Send,
{
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut last_full_warning: Option<Instant> = None;
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        // A slot first: when none is free, new connections stay in the kernel's backlog.
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if last_full_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(
                        max_connections = max,
                        "connection cap reached; new connections wait in the listen backlog"
                    );
                    last_full_warning = Some(Instant::now());
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    p = Arc::clone(&slots).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break, // the semaphore is never closed
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        let conn = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Header timeouts of slow clients land here: debug, or an attack floods the log.
                tracing::debug!(%peer, timeout = e.is_timeout(), "connection ended: {e}");
            }
            drop(permit);
        });
    }

    drop(listener);
    tracing::debug!(open = graceful.count(), "waiting for open connections");
    graceful.shutdown().await;
}

async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept error: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The connection cap for a configured maximum and the soft descriptor limit:
/// `min(configured, nofile_soft - RESERVED_DESCRIPTORS)`, at least [`MIN_CONNECTIONS`].
pub fn connection_cap(configured: usize, nofile_soft: u64) -> usize {
    let room =
        usize::try_from(nofile_soft.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX);
    configured.min(room).max(MIN_CONNECTIONS)
}

/// The process's open-file (descriptor) limit, before and after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit found at start.
    pub previous_soft: u64,
    /// The soft limit now in force: the most descriptors the process may have open.
    pub soft: u64,
    /// The hard limit: the most the soft limit can be raised to without privileges.
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns both.
///
/// # Errors
/// The `getrlimit` or `setrlimit` error. After a failed `setrlimit` the limit is unchanged; read
/// it with [`nofile_limit`].
pub fn raise_nofile_limit() -> std::io::Result<NofileLimit> {
    let (soft, hard) = nofile_limit()?;
    if soft < hard && hard != libc::RLIM_INFINITY {
        let raised = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct we pass and nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let (now, hard) = nofile_limit()?;
    Ok(NofileLimit {
        previous_soft: soft,
        soft: now,
        hard,
    })
}

/// The soft and hard `RLIMIT_NOFILE` of this process.
///
/// # Errors
/// The `getrlimit` error.
pub fn nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_stays_below_the_descriptor_limit() {
        assert_eq!(connection_cap(1024, 1024), 768);
        assert_eq!(connection_cap(1024, 20_000), 1024);
        assert_eq!(connection_cap(32, 20_000), 32);
        assert_eq!(connection_cap(1024, 200), MIN_CONNECTIONS);
        assert_eq!(connection_cap(0, 20_000), MIN_CONNECTIONS);
        assert_eq!(connection_cap(5000, u64::MAX), 5000);
    }

    #[test]
    fn raising_keeps_soft_at_most_hard() {
        let l = raise_nofile_limit().expect("rlimit");
        assert!(l.previous_soft <= l.soft && l.soft <= l.hard, "{l:?}");
    }
}
