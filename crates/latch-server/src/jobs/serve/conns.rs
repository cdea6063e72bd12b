//! The open connections: caps in total and per address, eviction of the oldest idle one when
//! full, and waiting for them all to end at shutdown.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One registered connection.
struct Entry {
    /// [`latch_core::auth_failures::ip_key`] of the peer.
    key: String,
    /// Requests in flight (until their response body ends).
    busy: Arc<AtomicUsize>,
    /// Cancelled to close the connection at once (evicted).
    close: CancellationToken,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// By id, so oldest first.
    open: BTreeMap<u64, Entry>,
    per_key: HashMap<String, usize>,
}

impl Registry {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.open.remove(&id)?;
        if let Some(n) = self.per_key.get_mut(&e.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_key.remove(&e.key);
            }
        }
        Some(e)
    }

    /// Closes the oldest connection with no request in flight (of `key` only, if given).
    fn evict_oldest_idle(&mut self, key: Option<&str>) -> bool {
        let victim = self
            .open
            .iter()
            .find(|(_, e)| e.busy.load(Ordering::Acquire) == 0 && key.is_none_or(|k| k == e.key))
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.remove(id)) {
            Some(e) => {
                e.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// Why a connection was not admitted (metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Every connection from its address is busy.
    PerAddress,
    /// Every connection is busy.
    Total,
}

impl Refused {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::PerAddress => "per_address",
            Self::Total => "total",
        }
    }
}

/// The open connections and their caps.
pub(crate) struct Conns {
    max: usize,
    per_address: usize,
    registry: Mutex<Registry>,
    /// Connection tasks still running (evicted ones included, until they end).
    live: AtomicUsize,
    ended: Notify,
}

impl Conns {
    pub(crate) fn new(max: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            per_address: per_address.max(1),
            registry: Mutex::new(Registry::default()),
            live: AtomicUsize::new(0),
            ended: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `ip`, closing the oldest idle connection of its address (at
    /// the per-address cap) or of all (at the total cap) to make room.
    ///
    /// # Errors
    /// [`Refused`] when there is no room and nothing idle to close: the caller drops the
    /// connection at once.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let key = latch_core::auth_failures::ip_key(ip);
        let mut g = self.lock();
        if g.per_key.get(&key).copied().unwrap_or(0) >= self.per_address
            && !g.evict_oldest_idle(Some(&key))
        {
            return Err(Refused::PerAddress);
        }
        if g.open.len() >= self.max && !g.evict_oldest_idle(None) {
            return Err(Refused::Total);
        }
        let id = g.next_id;
        g.next_id += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let close = CancellationToken::new();
        *g.per_key.entry(key.clone()).or_default() += 1;
        g.open.insert(
            id,
            Entry {
                key,
                busy: busy.clone(),
                close: close.clone(),
            },
        );
        let open = g.open.len();
        drop(g);
        self.live.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!("latch_http_connections").set(open as f64);
        Ok(Slot {
            id,
            conns: self.clone(),
            busy,
            close,
        })
    }

    /// Registered connections (evicted ones no longer count).
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Waits until every connection task has ended.
    pub(crate) async fn all_ended(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }
}

/// A connection's place in [`Conns`]; dropping it (when the connection task ends) frees it.
pub(crate) struct Slot {
    id: u64,
    conns: Arc<Conns>,
    /// Requests in flight on the connection.
    pub(crate) busy: Arc<AtomicUsize>,
    /// Cancelled when the connection was evicted.
    pub(crate) close: CancellationToken,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let open = {
            let mut g = self.conns.lock();
            g.remove(self.id);
            g.open.len()
        };
        metrics::gauge!("latch_http_connections").set(open as f64);
        if self.conns.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conns.ended.notify_waiters();
        }
    }
}

/// A request on its connection. It counts the connection busy (never evicted) from
/// [`Busy::enter`] — its body received in full, or its response begun — until it is dropped
/// (with the request body and the response body). Before that its body is still arriving and
/// the connection stays evictable like an idle one, so slow bodies cannot pin the slots.
pub(crate) struct Busy {
    count: Arc<AtomicUsize>,
    entered: AtomicBool,
}

impl Busy {
    /// A request on the connection whose in-flight count is `count`, not yet counted.
    pub(crate) fn new(count: &Arc<AtomicUsize>) -> Arc<Self> {
        Arc::new(Self {
            count: count.clone(),
            entered: AtomicBool::new(false),
        })
    }

    /// Counts the request in flight (once, however often called).
    pub(crate) fn enter(&self) {
        if !self.entered.swap(true, Ordering::AcqRel) {
            self.count.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if *self.entered.get_mut() {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn entered(count: &Arc<AtomicUsize>) -> Arc<Busy> {
        let b = Busy::new(count);
        b.enter();
        b
    }

    #[test]
    fn a_connection_still_receiving_its_request_body_is_evicted_like_an_idle_one() {
        let c = Conns::new(2, 2);
        // Two connections whose requests are still arriving (a body trickled a byte at a
        // time), one from each of two addresses.
        let slow = c.admit(ip("10.0.0.1")).unwrap();
        let slow_req = Busy::new(&slow.busy);
        let other = c.admit(ip("10.0.0.2")).unwrap();
        let other_req = Busy::new(&other.busy);
        // A new client from a third address: the oldest receiving one makes room.
        let fresh = c.admit(ip("10.0.0.3")).unwrap();
        assert!(slow.close.is_cancelled());
        assert!(!other.close.is_cancelled());
        // Once a body is complete, its connection is busy until the request is done.
        other_req.enter();
        other_req.enter();
        assert_eq!(other.busy.load(Ordering::Acquire), 1, "counted once");
        let fresh_req = Busy::new(&fresh.busy);
        fresh_req.enter();
        assert_eq!(c.admit(ip("10.0.0.4")).err(), Some(Refused::Total));
        drop(other_req);
        assert_eq!(other.busy.load(Ordering::Acquire), 0);
        let _next = c.admit(ip("10.0.0.4")).unwrap();
        assert!(other.close.is_cancelled());
        drop((slow_req, fresh_req));
        assert_eq!(fresh.busy.load(Ordering::Acquire), 0);
        assert_eq!(slow.busy.load(Ordering::Acquire), 0, "never counted");
    }

    #[tokio::test]
    async fn caps_evict_the_oldest_idle_connection_and_refuse_when_all_are_busy() {
        let c = Conns::new(3, 2);
        let a1 = c.admit(ip("10.0.0.1")).unwrap();
        let a2 = c.admit(ip("10.0.0.1")).unwrap();
        // The address is full: its oldest idle connection makes room.
        let a3 = c.admit(ip("10.0.0.1")).unwrap();
        assert!(a1.close.is_cancelled());
        assert!(!a2.close.is_cancelled());
        assert_eq!(c.open(), 2);
        // Busy connections are never evicted.
        let _b2 = entered(&a2.busy);
        let _b3 = entered(&a3.busy);
        assert_eq!(c.admit(ip("10.0.0.1")).err(), Some(Refused::PerAddress));
        let b1 = c.admit(ip("10.0.0.2")).unwrap();
        // Full in total: the oldest idle one, of any address, goes.
        let b2 = c.admit(ip("::ffff:10.0.0.3")).unwrap();
        assert!(b1.close.is_cancelled());
        let _busy = entered(&b2.busy);
        assert_eq!(c.admit(ip("10.0.0.4")).err(), Some(Refused::Total));
        drop((a1, b1));
        assert_eq!(c.open(), 3, "evicted slots were already freed");
        drop((a2, a3, b2, _busy, _b2, _b3));
        assert_eq!(c.open(), 0);
        c.all_ended().await;
    }
}
