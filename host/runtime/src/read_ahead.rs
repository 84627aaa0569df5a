//! Read-ahead of the next page: while a plugin works through a page whose answer names a
//! `Link: <…>; rel="next"` target (RFC 8288 §3; GitHub's REST pagination, "Using pagination in
//! the REST API"), the host already fetches that target, so the upstream's time and the
//! plugin's time overlap instead of adding up.
//!
//! Rules, each chosen so a plugin cannot tell the read-ahead exists except by speed:
//! - Only once the plugin is paging: after a `GET` that was itself the `next` target of the
//!   answer before, whose own answer is 2xx and names a `next` target. A listing read for one
//!   page (an incremental sync that finds nothing new) costs no extra request.
//! - Only a `GET` of the `next` target with the same headers and secret headers and no body:
//!   a safe method (RFC 9110 §9.2.1), so reading it early changes nothing upstream.
//! - The early request goes through [`Outbound::fetch`] like any other: destination rules,
//!   address checks, retries and rate-limit waits all apply to it.
//! - A plugin's next request is answered by the read-ahead only if it is exactly that request;
//!   any other request drops the read-ahead first (its connection is closed), so a run has at
//!   most one request in flight, as before. A read-ahead that failed in transport is not
//!   reused: the plugin's request is sent again.
//! - Not after answers larger than [`MAX_READ_AHEAD_BODY`]: the read-ahead holds a second
//!   page in memory, which is only worth it for pages of ordinary size.
//!
//! Links are read with the `parse_link_header` crate, which takes absolute URIs and
//! path-absolute references (GitHub sends absolute ones); a target it cannot read (e.g. a bare
//! `?page=2`) only means no read-ahead, never a wrong page.
//!
//! Cost: a listing the plugin stops reading after its second page or later (e.g. a
//! newest-first listing read down to a cursor) gets one request more than the plugin made;
//! the first page of every listing is read without overlap.

use std::sync::Arc;

use reqwest::Method;
use reqwest::header::HeaderMap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::outbound::{Outbound, OutboundError, OutboundRequest, OutboundResponse};
use crate::policy::Destinations;
use crate::redact::{Redactor, loggable_url};

/// Largest answer (bytes of body) after which the next page is read ahead.
pub const MAX_READ_AHEAD_BODY: usize = 8 << 20;

/// The read-ahead of one plugin call: at most one request in flight.
#[derive(Default)]
pub(crate) struct ReadAhead {
    pending: Option<Pending>,
    /// The `next` target of the last answer.
    next: Option<Url>,
    /// Whether the request being answered was that target (the plugin is paging).
    paging: bool,
}

struct Pending {
    request: Sent,
    task: JoinHandle<Result<OutboundResponse, OutboundError>>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a read-ahead keeps of a body-less `GET` that was sent: enough to repeat it for
/// another URL, and to recognise it when the plugin sends it.
pub(crate) struct Sent {
    url: Url,
    headers: HeaderMap,
    secret_headers: HeaderMap,
    redactor: Redactor,
}

impl Sent {
    /// `Some` for a body-less `GET`, the only request read ahead.
    pub(crate) fn of(req: &OutboundRequest) -> Option<Sent> {
        (req.method == Method::GET && req.body.is_none()).then(|| Sent {
            url: req.url.clone(),
            headers: req.headers.clone(),
            secret_headers: req.secret_headers.clone(),
            redactor: req.redactor.clone(),
        })
    }

    /// Whether `req` is this request: URL, headers and secret headers byte for byte.
    fn is(&self, req: &OutboundRequest) -> bool {
        req.method == Method::GET
            && req.body.is_none()
            && req.url == self.url
            && req.headers == self.headers
            && req.secret_headers == self.secret_headers
    }

    /// The same request for another URL.
    fn at(&self, url: Url) -> Sent {
        Sent {
            url,
            headers: self.headers.clone(),
            secret_headers: self.secret_headers.clone(),
            redactor: self.redactor.clone(),
        }
    }

    fn request(&self) -> OutboundRequest {
        OutboundRequest {
            method: Method::GET,
            url: self.url.clone(),
            headers: self.headers.clone(),
            secret_headers: self.secret_headers.clone(),
            body: None,
            idempotent: true,
            redactor: self.redactor.clone(),
        }
    }
}

/// What [`ReadAhead::take`] found for a request.
pub(crate) enum Lookup {
    /// The request was read ahead; this is its answer (or its non-transport error).
    Hit(Result<OutboundResponse, OutboundError>),
    /// Not read ahead (or the read-ahead failed in transport): send it.
    Miss(Box<OutboundRequest>),
}

impl ReadAhead {
    /// Whether `url` is the `next` target the last answer named (so the upstream chose it).
    pub(crate) fn is_next(&self, url: &Url) -> bool {
        self.next.as_ref() == Some(url)
    }

    /// Answers `req` from the read-ahead if it is exactly the request read ahead; otherwise
    /// drops any read-ahead (closing its connection) and hands `req` back to be sent.
    pub(crate) async fn take(&mut self, req: OutboundRequest) -> Lookup {
        self.paging = self.next.take().is_some_and(|n| n == req.url);
        let Some(mut pending) = self.pending.take() else {
            return Lookup::Miss(Box::new(req));
        };
        if !pending.request.is(&req) {
            tracing::debug!("read-ahead dropped: the plugin sent another request");
            return Lookup::Miss(Box::new(req));
        }
        match (&mut pending.task).await {
            Ok(Err(OutboundError::Timeout | OutboundError::Connection(_))) | Err(_) => {
                Lookup::Miss(Box::new(req))
            }
            Ok(result) => Lookup::Hit(result),
        }
    }

    /// After the request `sent` was answered with `resp`, starts reading its `next` page if
    /// the rules of this module allow it.
    pub(crate) fn after(
        &mut self,
        sent: &Sent,
        resp: &OutboundResponse,
        outbound: &Arc<Outbound>,
        destinations: &Destinations,
        cancel: &CancellationToken,
    ) {
        self.pending = None;
        // With a cassette every exchange is the plugin's own, so that replay meets the same
        // requests as the recording, whatever a read-ahead would have raced.
        if outbound.config().cassette.is_some()
            || !(200..300).contains(&resp.status)
            || resp.body.len() > MAX_READ_AHEAD_BODY
        {
            return;
        }
        self.next = next_link(&resp.headers, &sent.url).filter(|n| *n != sent.url);
        let Some(next) = self.next.clone().filter(|_| self.paging) else {
            return;
        };
        tracing::debug!(url = %loggable_url(&next, &sent.redactor), "reading the next page ahead");
        let request = sent.at(next);
        let early = request.request();
        let (outbound, destinations, cancel) =
            (outbound.clone(), destinations.clone(), cancel.clone());
        let task = tokio::spawn(async move { outbound.fetch(&destinations, early, &cancel).await });
        self.pending = Some(Pending { request, task });
    }
}

impl ReadAhead {
    /// Gives a read-ahead that [`ReadAhead::after`] just started the turns it needs to put its
    /// request on the wire, on a current-thread runtime (`sluice run`). There a spawned task
    /// runs only when the plugin's call yields, and a plugin works through a page without
    /// yielding, so the next page would be asked for only when the plugin asks for it: no
    /// overlap (20k GitHub issues took 1.25x the wall time). Two turns: one for the read-ahead
    /// to hand its request to the pooled connection, one for the connection's task to write
    /// it. A read-ahead that needs more (a new connection, a name to resolve) goes on at the
    /// plugin's next yield (its next host call that waits, or the 10 ms epoch tick). On a
    /// multi-thread runtime other workers run it at once: nothing to do.
    pub(crate) async fn let_start(&self) {
        let one_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        if self.pending.is_some() && one_thread {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        }
    }
}

/// The `rel="next"` target of an answer's `Link` headers (RFC 8288), resolved against the
/// request's URL (RFC 3986 §5); `None` when absent or unparsable.
fn next_link(headers: &[(String, String)], base: &Url) -> Option<Url> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("link"))
        .find_map(|(_, v)| {
            let links = parse_link_header::parse_with_rel(v).ok()?;
            let next = links.get("next")?;
            base.join(&next.raw_uri).ok()
        })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::{Query, State};
    use axum::http::HeaderMap as AxumHeaders;
    use axum::response::IntoResponse;
    use serde_json::json;

    use super::*;
    use crate::outbound::OutboundConfig;
    use crate::policy::{AddressGrant, HostRule, OperatorPolicy};

    /// A listing of four pages linked by `Link: rel="next"`; counts the requests it served.
    async fn listing() -> (String, Arc<AtomicUsize>) {
        #[derive(serde::Deserialize)]
        struct Page {
            page: u32,
        }
        async fn page(
            State(served): State<Arc<AtomicUsize>>,
            Query(q): Query<Page>,
            headers: AxumHeaders,
        ) -> impl IntoResponse {
            served.fetch_add(1, Ordering::SeqCst);
            let mut h = AxumHeaders::new();
            if q.page < 4 {
                let next = format!(
                    "</items?page={}>; rel=\"next\", </items?page=4>; rel=\"last\"",
                    q.page + 1
                );
                h.insert("link", next.parse().unwrap());
            }
            let who = headers
                .get("x-who")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (h, format!("page {} for {who}", q.page))
        }
        let served = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .route("/items", axum::routing::get(page))
            .with_state(served.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), served)
    }

    fn outbound(base: &str) -> (Arc<Outbound>, Destinations) {
        let policy = OperatorPolicy {
            allow: OperatorPolicy::parse_allow("*").unwrap(),
            addresses: AddressGrant::parse("loopback").unwrap(),
        };
        let outbound = Arc::new(Outbound::new(policy, OutboundConfig::default()).unwrap());
        let dest = outbound.destinations(&[HostRule::parse(base).unwrap()], &json!({}));
        (outbound, dest)
    }

    fn get(url: &str, who: &str) -> OutboundRequest {
        let mut headers = HeaderMap::new();
        headers.insert("x-who", who.parse().unwrap());
        OutboundRequest {
            method: Method::GET,
            url: Url::parse(url).unwrap(),
            headers,
            secret_headers: HeaderMap::new(),
            body: None,
            idempotent: true,
            redactor: Redactor::default(),
        }
    }

    /// Sends `req` as the host's `fetch` does: the read-ahead first, then the upstream.
    async fn fetch(
        ra: &mut ReadAhead,
        req: OutboundRequest,
        out: &Arc<Outbound>,
        dest: &Destinations,
    ) -> (bool, OutboundResponse) {
        let cancel = CancellationToken::new();
        let sent = Sent::of(&req);
        let (hit, resp) = match ra.take(req).await {
            Lookup::Hit(r) => (true, r.unwrap()),
            Lookup::Miss(req) => (false, out.fetch(dest, *req, &cancel).await.unwrap()),
        };
        if let Some(sent) = &sent {
            ra.after(sent, &resp, out, dest, &cancel);
            ra.let_start().await;
        }
        (hit, resp)
    }

    /// [`listing`] on a thread and runtime of its own, so that it answers while the test's
    /// thread is busy.
    fn listing_elsewhere() -> (String, Arc<AtomicUsize>) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                tx.send(listing().await).unwrap();
                std::future::pending::<()>().await
            });
        });
        rx.recv().unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn on_one_thread_the_next_page_is_asked_for_while_the_plugin_works() {
        let (base, served) = listing_elsewhere();
        let (out, dest) = outbound(&base);
        let mut ra = ReadAhead::default();
        let page = |n: u32| get(&format!("{base}/items?page={n}"), "a");
        fetch(&mut ra, page(1), &out, &dest).await;
        fetch(&mut ra, page(2), &out, &dest).await;
        // The plugin works through page 2 without yielding to the runtime: the upstream is
        // asked for page 3 all the same.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while served.load(Ordering::SeqCst) < 3 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(served.load(Ordering::SeqCst), 3, "page 3 read while busy");
        let (hit, third) = fetch(&mut ra, page(3), &out, &dest).await;
        assert!(hit, "page 3 should come from the read-ahead");
        assert_eq!(third.body, b"page 3 for a");
    }

    async fn settle(served: &AtomicUsize, n: usize) {
        for _ in 0..200 {
            if served.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn once_the_plugin_pages_the_next_page_is_read_ahead_and_answers_exactly_that_request() {
        let (base, served) = listing().await;
        let (out, dest) = outbound(&base);
        let mut ra = ReadAhead::default();
        let page = |n: u32| get(&format!("{base}/items?page={n}"), "a");
        let served_after_a_while = || async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            served.load(Ordering::SeqCst)
        };
        // The first page of a listing: nothing is read ahead (a plugin may stop there).
        let (hit, first) = fetch(&mut ra, page(1), &out, &dest).await;
        assert!(!hit);
        assert_eq!(first.body, b"page 1 for a");
        assert_eq!(served_after_a_while().await, 1);
        // The plugin follows `next`: now it pages, and page 3 is read before it asks.
        let (hit, second) = fetch(&mut ra, page(2), &out, &dest).await;
        assert!(!hit);
        assert_eq!(second.body, b"page 2 for a");
        settle(&served, 3).await;
        assert_eq!(served.load(Ordering::SeqCst), 3);
        let (hit, third) = fetch(&mut ra, page(3), &out, &dest).await;
        assert!(hit, "page 3 should come from the read-ahead");
        assert_eq!(third.body, b"page 3 for a");
        let (hit, fourth) = fetch(&mut ra, page(4), &out, &dest).await;
        assert!(hit);
        assert_eq!(fourth.body, b"page 4 for a");
        // The last page names no next: nothing more is read, and each page was served once.
        assert_eq!(served_after_a_while().await, 4);
    }

    #[tokio::test]
    async fn another_request_is_sent_as_asked_and_never_answered_from_the_read_ahead() {
        let (base, served) = listing().await;
        let (out, dest) = outbound(&base);
        let mut ra = ReadAhead::default();
        let page = |n: u32, who: &str| get(&format!("{base}/items?page={n}"), who);
        fetch(&mut ra, page(1, "a"), &out, &dest).await;
        fetch(&mut ra, page(2, "a"), &out, &dest).await;
        settle(&served, 3).await;
        // Same URL, other headers (e.g. another credential): a miss, sent afresh.
        let (hit, resp) = fetch(&mut ra, page(3, "b"), &out, &dest).await;
        assert!(!hit);
        assert_eq!(resp.body, b"page 3 for b");
        // Another URL than the next one: a miss too.
        settle(&served, 5).await;
        let (hit, resp) = fetch(&mut ra, page(1, "b"), &out, &dest).await;
        assert!(!hit);
        assert_eq!(resp.body, b"page 1 for b");
        assert_eq!(served.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn only_body_less_gets_are_read_ahead_and_links_resolve_against_the_request() {
        let mut post = get("http://127.0.0.1:1/items", "a");
        post.method = Method::POST;
        assert!(Sent::of(&post).is_none());
        let mut with_body = get("http://127.0.0.1:1/items", "a");
        with_body.body = Some(vec![]);
        assert!(Sent::of(&with_body).is_none());
        let base = Url::parse("https://api.github.com/repos/a/b/issues?page=1").unwrap();
        let h = |v: &str| vec![("Link".to_string(), v.to_string())];
        assert_eq!(
            next_link(&h(r#"<https://api.github.com/repositories/1/issues?page=2>; rel="next", <https://api.github.com/repositories/1/issues?page=9>; rel="last""#), &base).unwrap().as_str(),
            "https://api.github.com/repositories/1/issues?page=2"
        );
        assert_eq!(
            next_link(&h(r#"</repos/a/b/issues?page=2>; rel="next""#), &base)
                .unwrap()
                .as_str(),
            "https://api.github.com/repos/a/b/issues?page=2"
        );
        assert!(next_link(&h(r#"<https://x/?page=9>; rel="last""#), &base).is_none());
        assert!(next_link(&h("garbage"), &base).is_none());
        assert!(next_link(&[], &base).is_none());
    }
}
