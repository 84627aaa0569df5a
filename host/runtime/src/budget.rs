//! The process-wide plugin memory budget (`SLUICE_PLUGIN_MEMORY_BUDGET_MIB`): linear memory and
//! tables that all plugin calls together may hold.
//!
//! A call takes from it what its store actually holds, as its memories and tables grow (the
//! store's async resource limiter, [`crate::host::MemoryLimits`]), not its limit; all of it is
//! given back when the store is dropped. So a call that waits on the network holds only what
//! it grew to (an outside attack held the whole budget with three `validate` calls waiting on
//! an upstream that never answered, when every call reserved its limit up front). The pages a
//! component instantiates with are reserved in one step before the call instantiates
//! (measured at the plugin's previous instantiation, `Code::initial_bytes`).
//!
//! When the budget is short:
//! - a call that holds nothing of it yet (the reservation of its initial pages) waits until
//!   its deadline, as a call used to wait for its whole limit: it holds no memory another call
//!   could be waiting for;
//! - a growth of a call that holds some waits at most [`MemoryBudget::growth_wait`] (and
//!   never past its deadline), then it is refused and the call stops with
//!   [`crate::CallError::MemoryBudget`], whose message names the setting. Two calls that each
//!   wait for memory the other holds therefore never wait for ever: the first to give up drops
//!   its store, and the other gets what it held.
//!
//! The budget is shared fairly between plugins ([`crate::fair`]): a plugin may take its last
//! quarter only while its calls hold at most a quarter of it in all, so a plugin whose calls
//! hold memory while they hang on an upstream leaves a quarter for the others' calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fair::{FairPool, Key, Permit};

/// The budget's unit: one WebAssembly page. Tables (16 bytes an element) round up to it.
pub(crate) const UNIT: usize = 64 << 10;

/// The budget shared by every plugin call of a runtime.
pub(crate) struct MemoryBudget {
    pages: Arc<FairPool>,
    /// How long a growth of a call that already holds part of the budget may wait.
    growth_wait: Duration,
}

impl MemoryBudget {
    /// A budget of `mib` MiB (at least 1): a quarter kept from plugins that hold more than a
    /// quarter ([`crate::fair`]).
    pub fn new(mib: u32, growth_wait: Duration) -> Arc<Self> {
        let units = u64::from(mib.max(1)) * ((1 << 20) / UNIT) as u64;
        Arc::new(Self {
            pages: FairPool::quarter_reserve(units, |reserve| reserve),
            growth_wait,
        })
    }

    /// Bytes that calls hold now.
    pub fn in_use_bytes(&self) -> u64 {
        self.pages.stats().in_use * UNIT as u64
    }

    /// Pages in use and calls waiting for pages.
    pub fn stats(&self) -> crate::fair::PoolStats {
        self.pages.stats()
    }

    fn mib(&self) -> u64 {
        (self.pages.total() * UNIT as u64) >> 20
    }

    /// An empty share for a call of plugin `key` that must end by `deadline`.
    pub fn share(self: &Arc<Self>, key: Key, deadline: Instant) -> Share {
        Share {
            budget: self.clone(),
            key,
            held: None,
            deadline,
        }
    }
}

/// What one call holds of the budget; given back when dropped (with the call's store).
pub(crate) struct Share {
    budget: Arc<MemoryBudget>,
    key: Key,
    held: Option<Permit>,
    deadline: Instant,
}

/// A growth the budget could not cover in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "the plugin memory budget is exhausted: this call needed {needed_mib:.1} MiB of linear \
     memory and tables (it held {held_mib:.1} MiB) and waited {waited_s:.1} s, but other plugin \
     calls held {others_mib:.1} MiB of SLUICE_PLUGIN_MEMORY_BUDGET_MIB ({budget_mib} MiB for all \
     calls together; this plugin's calls held {plugin_mib:.1} MiB of it, and a plugin may take \
     its last {reserve_mib:.1} MiB only while its calls hold at most that much); the growth was \
     refused"
)]
pub(crate) struct Exhausted {
    needed_mib: f64,
    held_mib: f64,
    others_mib: f64,
    plugin_mib: f64,
    reserve_mib: f64,
    budget_mib: u64,
    waited_s: f64,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

impl Share {
    /// Bytes held.
    pub fn held_bytes(&self) -> u64 {
        self.held.as_ref().map_or(0, |p| p.units() * UNIT as u64)
    }

    /// Makes the share cover `bytes` in all, waiting as the module describes.
    pub async fn cover(&mut self, bytes: usize) -> Result<(), Exhausted> {
        let want = bytes.div_ceil(UNIT) as u64;
        let have = self.held.as_ref().map_or(0, Permit::units);
        if want <= have {
            return Ok(());
        }
        let need = want - have;
        let started = Instant::now();
        let exhausted = |share: &Self| {
            let pages = &share.budget.pages;
            let in_use = share.budget.in_use_bytes();
            Exhausted {
                needed_mib: mib(bytes as u64),
                held_mib: mib(share.held_bytes()),
                others_mib: mib(in_use.saturating_sub(share.held_bytes())),
                plugin_mib: mib(pages.held_by(&share.key) * UNIT as u64),
                reserve_mib: mib(pages.reserve() * UNIT as u64),
                budget_mib: share.budget.mib(),
                waited_s: started.elapsed().as_secs_f64(),
            }
        };
        let pages = self.budget.pages.clone();
        if !pages.could_fit(want) {
            // More than one plugin may ever hold: no wait can help.
            return Err(exhausted(self));
        }
        let acquire = pages.acquire(&self.key, need);
        let give_up = Instant::now() + self.budget.growth_wait;
        // Holding nothing, or with the deadline first: wait, and the call's deadline stops the
        // wait (it is reported as the deadline, as any other wait of the call).
        let acquired = if have == 0 || self.deadline <= give_up {
            acquire.await
        } else {
            tokio::time::timeout_at(give_up.into(), acquire)
                .await
                .ok()
                .flatten()
        };
        let Some(permit) = acquired else {
            return Err(exhausted(self));
        };
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    fn key(s: &str) -> Key {
        Arc::from(s)
    }

    #[tokio::test]
    async fn a_share_holds_what_it_grew_to_and_gives_it_back_when_dropped() {
        let budget = MemoryBudget::new(10, Duration::from_millis(50));
        let mut a = budget.share(key("a"), far());
        a.cover(MIB + 1).await.unwrap();
        // Rounded up to whole pages, and growing again takes only the difference.
        assert_eq!(budget.in_use_bytes(), (MIB + UNIT) as u64);
        a.cover(3 * MIB).await.unwrap();
        a.cover(2 * MIB).await.unwrap();
        assert_eq!(budget.in_use_bytes(), 3 * MIB as u64);
        let mut b = budget.share(key("b"), far());
        b.cover(4 * MIB).await.unwrap();
        assert_eq!(budget.in_use_bytes(), 7 * MIB as u64);
        drop(a);
        assert_eq!(budget.in_use_bytes(), 4 * MIB as u64);
        drop(b);
        assert_eq!(budget.in_use_bytes(), 0);
    }

    #[tokio::test]
    async fn a_plugin_leaves_the_last_quarter_to_the_others() {
        let budget = MemoryBudget::new(8, Duration::from_millis(100));
        // Two calls of one plugin: together at most three quarters.
        let mut a1 = budget.share(key("a"), far());
        let mut a2 = budget.share(key("a"), far());
        a1.cover(4 * MIB).await.unwrap();
        a2.cover(2 * MIB).await.unwrap();
        let t = Instant::now();
        let e = a2.cover(3 * MIB).await.unwrap_err().to_string();
        assert!(
            t.elapsed() >= Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        assert!(
            e.contains("this plugin's calls held 6.0 MiB") && e.contains("its last 2.0 MiB"),
            "{e}"
        );
        // Another plugin's call gets the last quarter at once.
        let mut b = budget.share(key("b"), far());
        tokio::time::timeout(Duration::from_millis(50), b.cover(2 * MIB))
            .await
            .expect("no wait")
            .unwrap();
        assert_eq!(budget.in_use_bytes(), 8 * MIB as u64);
        assert_eq!(budget.stats().waiting, 0);
    }

    #[tokio::test]
    async fn a_growth_of_a_share_that_holds_memory_waits_a_bounded_time_then_is_refused() {
        let budget = MemoryBudget::new(10, Duration::from_millis(200));
        let mut a = budget.share(key("a"), far());
        a.cover(6 * MIB).await.unwrap();
        let mut b = budget.share(key("b"), far());
        b.cover(2 * MIB).await.unwrap();
        let t = Instant::now();
        let e = b.cover(5 * MIB).await.unwrap_err();
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("SLUICE_PLUGIN_MEMORY_BUDGET_MIB (10 MiB"),
            "{msg}"
        );
        assert!(msg.contains("needed 5.0 MiB"), "{msg}");
        assert!(msg.contains("held 2.0 MiB"), "{msg}");
        assert!(msg.contains("other plugin calls held 6.0 MiB"), "{msg}");
        // The refused growth took nothing; what b held it still holds.
        assert_eq!(budget.in_use_bytes(), 8 * MIB as u64);
        // Given back within the wait, the growth goes through.
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(a);
        });
        b.cover(5 * MIB).await.unwrap();
        release.await.unwrap();
        assert_eq!(budget.in_use_bytes(), 5 * MIB as u64);
    }

    #[tokio::test]
    async fn two_shares_waiting_for_each_others_memory_do_not_wait_for_ever() {
        let budget = MemoryBudget::new(10, Duration::from_millis(200));
        let mut a = budget.share(key("a"), far());
        let mut b = budget.share(key("b"), far());
        a.cover(5 * MIB).await.unwrap();
        b.cover(2 * MIB).await.unwrap();
        let t = Instant::now();
        let (ra, rb) = tokio::join!(
            async move {
                let r = a.cover(8 * MIB).await;
                // The loser's store is dropped with the call: so is its share.
                drop(a);
                r
            },
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let r = b.cover(7 * MIB).await;
                drop(b);
                r
            }
        );
        // a gives up first, and b gets what a gave back.
        assert!(ra.is_err() && rb.is_ok(), "{ra:?} {rb:?}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(budget.in_use_bytes(), 0);
    }

    #[tokio::test]
    async fn a_share_that_holds_nothing_waits_until_memory_is_given_back() {
        let budget = MemoryBudget::new(4, Duration::from_millis(10));
        let mut a = budget.share(key("a"), far());
        a.cover(3 * MIB).await.unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(a);
        });
        let mut b = budget.share(key("b"), far());
        let t = Instant::now();
        // Far longer than the growth wait: a first memory waits like a call used to.
        b.cover(2 * MIB).await.unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        release.await.unwrap();
        // More than the whole budget, or more than one plugin may hold (three quarters), is
        // refused at once.
        for mib in [5, 4] {
            let mut c = budget.share(key("c"), far());
            let t = Instant::now();
            assert!(c.cover(mib * MIB).await.is_err());
            assert!(
                t.elapsed() < Duration::from_millis(100),
                "{:?}",
                t.elapsed()
            );
        }
    }
}
