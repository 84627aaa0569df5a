//! Fair shares of a pool that plugin calls hold for as long as they run: the pooling allocator's
//! call slots (`SLUICE_MAX_CONCURRENT_CALLS`) and the plugin memory budget
//! (`SLUICE_PLUGIN_MEMORY_BUDGET_MIB`, in 64 KiB pages), each shared by every plugin.
//!
//! A call cannot be taken back from the plugin that holds it: a call waiting on an upstream
//! that never answers holds what it took until its deadline. A pool that hands out units first
//! come, first served (a plain semaphore) is then taken whole by one plugin whose calls all
//! hang, and every other plugin's call waits for that deadline (an outside attack: 32
//! `validate` calls of one connector against a silent upstream stopped every call of every
//! plugin for 30 s). So the pool keeps a **reserve** that the plugins already holding much of
//! it cannot take:
//!
//! - A plugin (the tenant: its id, [`Key`]) gets `want` units when they are free and either at
//!   least `reserve` units stay free after the grant, or its calls hold at most `floor` units
//!   together with the grant. One plugin alone can use `total - reserve` (most of the pool);
//!   whatever it holds, every other plugin still finds `reserve` units, of which each may take
//!   `floor` — so a plugin whose calls all hang delays another plugin's call by nothing, as
//!   long as fewer than `reserve / floor` other plugins hang too.
//! - Waiting calls are served by the least-holding plugin first (max-min fairness), oldest
//!   first within a plugin, and any waiter that fits is served (a large request does not
//!   hold up smaller ones behind it: its own wait is bounded by its caller). So when the
//!   calls of a hanging plugin end, their units go to the other plugins' waiting calls first.
//! - Waiting holds nothing and is cancel-safe: the caller bounds it (a deadline, a client's
//!   cancel) by dropping the future; a grant that raced with the drop is given back.
//!
//! This is the shape of Kubernetes' API Priority and Fairness (a concurrency limit shared by
//! flows, fair queuing among them) reduced to what a pool without preemption needs: a share
//! that is never lent out (APF's non-lendable seats) instead of per-flow queues.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// Whose units: a plugin's id.
pub type Key = Arc<str>;

/// A pool of `total` units shared fairly between keys (see the module).
pub struct FairPool {
    total: u64,
    reserve: u64,
    floor: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    free: u64,
    held: HashMap<Key, u64>,
    /// In arrival order.
    waiters: Vec<Waiter>,
    next_id: u64,
}

struct Waiter {
    id: u64,
    key: Key,
    want: u64,
    granted: oneshot::Sender<()>,
}

/// Counts of a pool, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Units held by calls.
    pub in_use: u64,
    /// Requests waiting for units.
    pub waiting: u64,
}

impl FairPool {
    /// A pool of `total` units, of which the last `reserve` go only to keys that hold at most
    /// `floor` (see the module).
    pub fn new(total: u64, reserve: u64, floor: u64) -> Arc<Self> {
        Arc::new(Self {
            total,
            reserve: reserve.min(total),
            floor,
            state: Mutex::new(State {
                free: total,
                ..State::default()
            }),
        })
    }

    /// The rule the service's pools use: a quarter of `total` (rounded down) kept in reserve;
    /// each key may take `floor` of it.
    pub fn quarter_reserve(total: u64, floor: impl FnOnce(u64) -> u64) -> Arc<Self> {
        let reserve = total / 4;
        Self::new(total, reserve, floor(reserve))
    }

    /// Units of the pool.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Units kept from keys that already hold more than [`Self::floor`].
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// What a key may hold and still take from the reserve.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under the lock keeps the counts whole; a panic elsewhere cannot break them.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Units in use and requests waiting.
    pub fn stats(&self) -> PoolStats {
        let s = self.lock();
        PoolStats {
            in_use: self.total - s.free,
            waiting: s.waiters.len() as u64,
        }
    }

    /// Units `key`'s permits hold now.
    pub fn held_by(&self, key: &str) -> u64 {
        self.lock().held.get(key).copied().unwrap_or(0)
    }

    fn fits(&self, free: u64, held: u64, want: u64) -> bool {
        want <= free && (free - want >= self.reserve || held.saturating_add(want) <= self.floor)
    }

    /// Grants every waiter that fits, least-holding key first, oldest first.
    fn dispatch(&self, s: &mut State) {
        loop {
            let mut best: Option<(usize, u64)> = None;
            for (i, w) in s.waiters.iter().enumerate() {
                let held = s.held.get(&w.key).copied().unwrap_or(0);
                if self.fits(s.free, held, w.want) && best.is_none_or(|(_, h)| held < h) {
                    best = Some((i, held));
                }
            }
            let Some((i, _)) = best else { return };
            let w = s.waiters.remove(i);
            s.free -= w.want;
            *s.held.entry(w.key).or_default() += w.want;
            // A receiver already dropped: its guard gives the units back (it finds its
            // waiter gone) once it gets the lock.
            let _ = w.granted.send(());
        }
    }

    fn release(&self, key: &Key, units: u64) {
        if units == 0 {
            return;
        }
        let mut s = self.lock();
        s.free = (s.free + units).min(self.total);
        if let Some(h) = s.held.get_mut(key) {
            *h = h.saturating_sub(units);
            if *h == 0 {
                s.held.remove(key);
            }
        }
        self.dispatch(&mut s);
    }

    /// Whether `want` units could ever be granted to one key (alone in an empty pool).
    pub fn could_fit(&self, want: u64) -> bool {
        self.fits(self.total, 0, want)
    }

    /// `want` units for `key`, waiting as long as it takes (see the module); `None` when they
    /// could never be granted ([`Self::could_fit`]). Dropping the future stops the wait.
    pub async fn acquire(self: &Arc<Self>, key: &Key, want: u64) -> Option<Permit> {
        if !self.could_fit(want) {
            return None;
        }
        let permit = || Permit {
            pool: self.clone(),
            key: key.clone(),
            units: want,
        };
        if want == 0 {
            return Some(permit());
        }
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut s = self.lock();
            let id = s.next_id;
            s.next_id += 1;
            s.waiters.push(Waiter {
                id,
                key: key.clone(),
                want,
                granted: tx,
            });
            self.dispatch(&mut s);
            id
        };
        let mut guard = Waiting {
            pool: self,
            key,
            id,
            want,
            done: false,
        };
        // The sender lives in the waiter list until it is granted (sent) or this guard takes
        // it out, so an error (the sender dropped unsent) does not happen; were it to, nothing
        // was granted.
        let granted = rx.await.is_ok();
        guard.done = true;
        granted.then(permit)
    }
}

/// Removes a waiter whose future was dropped, or gives back what it was granted meanwhile.
struct Waiting<'a> {
    pool: &'a Arc<FairPool>,
    key: &'a Key,
    id: u64,
    want: u64,
    /// The grant reached the caller (as a [`Permit`]).
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut s = self.pool.lock();
        if let Some(i) = s.waiters.iter().position(|w| w.id == self.id) {
            s.waiters.remove(i);
            // Nothing is given back, but a waiter behind it may fit now that it does not
            // count (it never held anything): nothing changes for the others.
            return;
        }
        drop(s);
        // Granted after the caller stopped waiting: back to the pool.
        self.pool.release(self.key, self.want);
    }
}

/// Units held by one key; given back when dropped.
pub struct Permit {
    pool: Arc<FairPool>,
    key: Key,
    units: u64,
}

impl Permit {
    /// Units held.
    pub fn units(&self) -> u64 {
        self.units
    }

    /// Takes `other`'s units into this permit (both of the same pool and key).
    pub fn merge(&mut self, mut other: Permit) {
        debug_assert!(Arc::ptr_eq(&self.pool, &other.pool) && self.key == other.key);
        self.units += std::mem::take(&mut other.units);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.pool.release(&self.key, self.units);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(s: &str) -> Key {
        Arc::from(s)
    }

    async fn now(pool: &Arc<FairPool>, k: &Key, want: u64) -> Option<Permit> {
        tokio::time::timeout(Duration::from_millis(50), pool.acquire(k, want))
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn one_key_alone_takes_all_but_the_reserve_and_another_key_still_gets_in() {
        // 32 slots: a reserve of 8, of which each key may take 2.
        let pool = FairPool::quarter_reserve(32, |r| (r / 4).max(1));
        assert_eq!((pool.reserve(), pool.floor()), (8, 2));
        let (a, b, c) = (key("a"), key("b"), key("c"));
        let mut held = Vec::new();
        for _ in 0..24 {
            held.push(now(&pool, &a, 1).await.expect("under the reserve"));
        }
        assert!(
            now(&pool, &a, 1).await.is_none(),
            "a would take the reserve"
        );
        assert_eq!(
            pool.stats(),
            PoolStats {
                in_use: 24,
                waiting: 0
            }
        );
        let b1 = now(&pool, &b, 1).await.expect("b gets in beside a");
        let b2 = now(&pool, &b, 1)
            .await
            .expect("b's second, within the floor");
        assert!(now(&pool, &b, 1).await.is_none(), "past b's floor");
        let _c = now(&pool, &c, 1).await.expect("c gets in too");
        assert_eq!(pool.held_by("a"), 24);
        assert_eq!(pool.held_by("b"), 2);
        drop((b1, b2));
        assert_eq!(pool.stats().in_use, 25);
        drop(held);
        assert_eq!(
            pool.stats(),
            PoolStats {
                in_use: 1,
                waiting: 0
            }
        );
    }

    #[tokio::test]
    async fn freed_units_go_to_the_least_holding_key_first() {
        let pool = FairPool::new(4, 0, 0);
        let (a, b) = (key("a"), key("b"));
        let mut a_held: Vec<Permit> = Vec::new();
        for _ in 0..4 {
            a_held.push(now(&pool, &a, 1).await.unwrap());
        }
        // a queues first, then b: b holds less, so b is served first.
        let a_next = tokio::spawn({
            let (pool, a) = (pool.clone(), a.clone());
            async move { pool.acquire(&a, 1).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b_next = tokio::spawn({
            let (pool, b) = (pool.clone(), b.clone());
            async move { pool.acquire(&b, 1).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(pool.stats().waiting, 2);
        a_held.pop();
        let b_permit = b_next.await.unwrap().unwrap();
        assert!(!a_next.is_finished(), "a was served before b");
        assert_eq!(pool.held_by("b"), 1);
        a_held.pop();
        let _a_permit = a_next.await.unwrap().unwrap();
        drop(b_permit);
        assert_eq!(
            pool.stats(),
            PoolStats {
                in_use: 3,
                waiting: 0
            }
        );
    }

    #[tokio::test]
    async fn a_wait_that_is_dropped_takes_nothing_and_a_large_request_does_not_block_small_ones() {
        let pool = FairPool::new(10, 0, 0);
        let (a, b) = (key("a"), key("b"));
        let six = now(&pool, &a, 6).await.unwrap();
        // b waits for 8 (cannot fit yet); a later small request of a key still fits.
        let big = tokio::spawn({
            let (pool, b) = (pool.clone(), b.clone());
            async move { pool.acquire(&b, 8).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let two = now(&pool, &a, 2)
            .await
            .expect("not held up behind the large one");
        big.abort();
        let _ = big.await;
        assert_eq!(
            pool.stats(),
            PoolStats {
                in_use: 8,
                waiting: 0
            }
        );
        drop((six, two));
        assert_eq!(pool.stats().in_use, 0);
        // More than one key could ever hold: refused at once.
        assert!(pool.acquire(&a, 11).await.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn units_are_never_lost_when_waits_are_cancelled_as_they_are_granted() {
        let pool = FairPool::quarter_reserve(8, |r| r);
        let keys: Vec<Key> = ["a", "b", "c"].into_iter().map(key).collect();
        let mut tasks = Vec::new();
        for i in 0..300u64 {
            let (pool, k) = (pool.clone(), keys[(i % 3) as usize].clone());
            tasks.push(tokio::spawn(async move {
                let wait = Duration::from_micros(200 + (i * 37) % 900);
                if let Ok(Some(p)) = tokio::time::timeout(wait, pool.acquire(&k, 1 + i % 2)).await {
                    tokio::time::sleep(Duration::from_micros((i * 53) % 700)).await;
                    drop(p);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            pool.stats(),
            PoolStats {
                in_use: 0,
                waiting: 0
            }
        );
        for k in &keys {
            assert_eq!(pool.held_by(k), 0);
        }
    }

    #[tokio::test]
    async fn merged_permits_give_back_all_their_units() {
        let pool = FairPool::new(10, 0, 0);
        let a = key("a");
        let mut p = now(&pool, &a, 3).await.unwrap();
        p.merge(now(&pool, &a, 4).await.unwrap());
        assert_eq!((p.units(), pool.held_by("a")), (7, 7));
        drop(p);
        assert_eq!(pool.stats().in_use, 0);
    }
}
