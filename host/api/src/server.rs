//! Serving the router over HTTP/1 with limits that slow or idle clients cannot get around.
//!
//! [`serve`] replaces `axum::serve`, which sets no timer and so no timeouts, and accepts every
//! connection: slow clients kept their connections for ever and could use up the process's file
//! descriptors. Here:
//! - a client must send a complete request head within the header-read timeout, and a
//!   keep-alive connection is closed once it has been idle that long (hyper ≥ 1.6 starts the
//!   header-read timer again when a connection goes idle after a response);
//! - at most `max_connections` connections are open at once (each costs memory and a
//!   descriptor). At the cap, the connection that has waited longest *on its client* is closed
//!   to make room for the next one, so a new connection is always served while any open one is
//!   only waiting: waiting for a request head (none yet, a partial one, or idle after a
//!   response) or for the client to read what it was sent (a write that cannot proceed). A
//!   connection whose request is being served and whose client reads the answer is never closed
//!   for room; when every open connection is such, new ones wait in the kernel's listen backlog.
//!
//! Without the eviction, 2,100 connections that each sent a request head one byte a second
//! kept the cap of 2,048 full: the probes' `GET /health` waited in the backlog until slow
//! connections timed out (3.7 s, or the probe's timeout), and the attacker reopened. nginx does
//! the same for connections that have sent nothing (`ngx_drain_connections`: when free
//! connections run out it closes the oldest "reusable" ones, those waiting for a request or idle
//! in keep-alive); here a partial head counts as waiting too, since a client that sends its head
//! in pieces slower than the others has no better claim to the slot.
//!
//! [`raise_nofile_limit`] and [`connection_cap`] size the cap below the descriptor limit.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

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
    /// Most connections open at once (at least 1). At the cap, the connection that has waited
    /// longest on its client (for a request head, or to read its answer) is closed for the next
    /// one; new connections wait in the listen backlog only while every open connection is
    /// being served.
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
    let waiting = Arc::new(Waiting::default());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut last_full_warning: Option<Instant> = None;
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        // A slot first; at the cap, one made by closing the connection that waited longest.
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if last_full_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(
                        max_connections = max,
                        "connection cap reached; closing the connections that waited longest on their clients (for a request or to read an answer) to make room"
                    );
                    last_full_warning = Some(Instant::now());
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    p = make_room(&slots, &waiting) => p,
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
        let conn = waiting.open();
        let io = Watched {
            io: TokioIo::new(stream),
            conn: Arc::clone(&conn),
            waiting: Arc::clone(&waiting),
            stalled: false,
        };
        let service = Tracked {
            router: router.clone(),
            conn: Arc::clone(&conn),
            waiting: Arc::clone(&waiting),
        };
        let served = graceful.watch(http.serve_connection(io, service));
        let waiting = Arc::clone(&waiting);
        tokio::spawn(async move {
            tokio::select! {
                ended = served => if let Err(e) = ended {
                    // Header timeouts of slow clients land here: debug, or an attack floods the log.
                    tracing::debug!(%peer, timeout = e.is_timeout(), "connection ended: {e}");
                },
                () = conn.evict.notified() => {
                    tracing::debug!(%peer, "connection closed to make room: it waited longest on its client");
                }
            }
            waiting.close(&conn);
            drop(permit);
        });
    }

    drop(listener);
    tracing::debug!(open = graceful.count(), "waiting for open connections");
    graceful.shutdown().await;
}

/// A free slot, made if need be by closing the connection that has waited longest on its
/// client; waits while no connection waits on its client (every open one is being served).
async fn make_room(slots: &Arc<Semaphore>, waiting: &Waiting) -> OwnedSemaphorePermit {
    loop {
        if waiting.evict_oldest() {
            // Its task drops it and frees its slot as soon as it runs.
            if let Ok(p) = Arc::clone(slots).acquire_owned().await {
                return p;
            }
        } else {
            tokio::select! {
                p = Arc::clone(slots).acquire_owned() => if let Ok(p) = p {
                    return p;
                },
                () = waiting.changed.notified() => {}
            }
        }
    }
}

/// The open connections that wait on their clients, oldest first, for [`make_room`].
#[derive(Default)]
struct Waiting {
    queue: Mutex<Queue>,
    /// Told whenever a connection starts waiting (there may be room to make).
    changed: Notify,
}

#[derive(Default)]
struct Queue {
    /// The last key handed out; keys grow, so the smallest is the longest wait.
    last: u64,
    /// Waiting connections by the key they got when they started waiting.
    by_start: BTreeMap<u64, Arc<Conn>>,
}

/// One connection's state for [`Waiting`]; changed only under its lock.
#[derive(Default)]
struct Conn {
    /// Requests read whose answer has not been written out (0 or 1 on HTTP/1).
    requests: AtomicUsize,
    /// A write to the client cannot proceed (the client does not read).
    stalled: AtomicBool,
    /// Its key in [`Queue::by_start`]; 0 when not there.
    key: AtomicU64,
    /// Ended or chosen to make room: never waits again.
    closed: AtomicBool,
    /// Ends the connection: it was chosen to make room.
    evict: Notify,
}

impl Conn {
    /// Waits on its client: for a request (none being served), or to read what it was sent.
    fn waits_on_client(&self) -> bool {
        !self.closed.load(Ordering::Relaxed)
            && (self.requests.load(Ordering::Relaxed) == 0 || self.stalled.load(Ordering::Relaxed))
    }
}

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding it left the map whole (every change is one insert or remove).
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection just accepted: it waits for its first request head.
    fn open(&self) -> Arc<Conn> {
        let conn = Arc::new(Conn::default());
        self.update(&conn, |_| {});
        conn
    }

    /// Applies `change` to `conn` and moves it into or out of the queue to match.
    fn update(&self, conn: &Arc<Conn>, change: impl FnOnce(&Conn)) {
        let mut q = self.lock();
        change(conn);
        let key = conn.key.load(Ordering::Relaxed);
        let started = match (conn.waits_on_client(), key) {
            (true, 0) => {
                q.last += 1;
                let key = q.last;
                conn.key.store(key, Ordering::Relaxed);
                q.by_start.insert(key, Arc::clone(conn));
                true
            }
            (false, key) if key != 0 => {
                q.by_start.remove(&key);
                conn.key.store(0, Ordering::Relaxed);
                false
            }
            _ => false,
        };
        drop(q);
        if started {
            self.changed.notify_one();
        }
    }

    /// The connection ended: out of the queue for good.
    fn close(&self, conn: &Arc<Conn>) {
        self.update(conn, |c| c.closed.store(true, Ordering::Relaxed));
    }

    /// Tells the connection that has waited longest to close; false when none waits.
    fn evict_oldest(&self) -> bool {
        let oldest = {
            let mut q = self.lock();
            let Some((_, conn)) = q.by_start.pop_first() else {
                return false;
            };
            conn.key.store(0, Ordering::Relaxed);
            conn.closed.store(true, Ordering::Relaxed);
            conn
        };
        // Stores a permit: the connection's task sees it even if it is not waiting yet.
        oldest.evict.notify_one();
        sluice_telemetry::metrics().connection_closed_for_room();
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_start.len()
    }
}

/// The router as one connection's hyper service: a request being served takes the connection
/// out of [`Waiting`] until its answer's body has been written out (or dropped).
#[derive(Clone)]
struct Tracked {
    router: Router,
    conn: Arc<Conn>,
    waiting: Arc<Waiting>,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let busy = Busy::start(Arc::clone(&self.waiting), Arc::clone(&self.conn));
        let router = self.router.clone();
        Box::pin(async move {
            let res = tower::ServiceExt::oneshot(router, req).await?;
            Ok(res.map(|body| TrackedBody { body, _busy: busy }))
        })
    }
}

/// One request in progress on a connection.
struct Busy {
    waiting: Arc<Waiting>,
    conn: Arc<Conn>,
}

impl Busy {
    fn start(waiting: Arc<Waiting>, conn: Arc<Conn>) -> Self {
        waiting.update(&conn, |c| {
            c.requests.fetch_add(1, Ordering::Relaxed);
        });
        Self { waiting, conn }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.waiting.update(&self.conn, |c| {
            c.requests.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// An answer's body that keeps its request [`Busy`] until hyper has taken all of it.
struct TrackedBody {
    body: axum::body::Body,
    _busy: Busy,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's socket, noting in [`Waiting`] when a write cannot proceed (the client
/// does not read) and when it proceeds again.
struct Watched {
    io: TokioIo<TcpStream>,
    conn: Arc<Conn>,
    waiting: Arc<Waiting>,
    stalled: bool,
}

impl Watched {
    fn note<T>(&mut self, polled: &Poll<T>) {
        let stalled = polled.is_pending();
        if stalled != self.stalled {
            self.stalled = stalled;
            self.waiting
                .update(&self.conn, |c| c.stalled.store(stalled, Ordering::Relaxed));
        }
    }
}

impl hyper::rt::Read for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
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
    fn the_connection_waiting_longest_is_closed_first_and_served_ones_never() {
        let w = Waiting::default();
        let a = w.open();
        let b = w.open();
        let c = w.open();
        assert_eq!(w.len(), 3);
        // a sends a request: it is served, so it no longer waits; b is now the oldest.
        let w = Arc::new(w);
        let busy = Busy::start(Arc::clone(&w), Arc::clone(&a));
        assert_eq!(w.len(), 2);
        assert!(w.evict_oldest());
        assert!(b.closed.load(Ordering::Relaxed) && !c.closed.load(Ordering::Relaxed));
        // a's answer is written: it waits again, behind c.
        drop(busy);
        assert!(w.evict_oldest());
        assert!(c.closed.load(Ordering::Relaxed) && !a.closed.load(Ordering::Relaxed));
        // Served, but its client does not read the answer: it waits on the client.
        w.update(&a, |c| {
            c.requests.fetch_add(1, Ordering::Relaxed);
        });
        assert!(!w.evict_oldest(), "a connection being served was chosen");
        w.update(&a, |c| c.stalled.store(true, Ordering::Relaxed));
        assert!(w.evict_oldest());
        assert!(a.closed.load(Ordering::Relaxed));
        // Closed ones never come back.
        w.update(&a, |c| c.stalled.store(false, Ordering::Relaxed));
        w.update(&a, |c| {
            c.requests.fetch_sub(1, Ordering::Relaxed);
        });
        w.close(&b);
        assert_eq!(w.len(), 0);
        assert!(!w.evict_oldest());
    }

    #[tokio::test]
    async fn an_eviction_wakes_the_connection_even_before_it_waits() {
        let w = Waiting::default();
        let a = w.open();
        assert!(w.evict_oldest());
        tokio::time::timeout(Duration::from_secs(5), a.evict.notified())
            .await
            .expect("the eviction was lost");
    }

    #[test]
    fn raising_keeps_soft_at_most_hard() {
        let l = raise_nofile_limit().expect("rlimit");
        assert!(l.previous_soft <= l.soft && l.soft <= l.hard, "{l:?}");
    }
}
