//! The live-lease index's storage: every active credential the broker may answer an
//! introspection for, kept compact enough that a million live leases fit in well under 200 MB
//! of resident memory (issue 19).
//!
//! Layout, per live lease: one [`Slot`] of 104 bytes (the credential's HMAC as 32 raw bytes,
//! the lease and task ids as 16 raw bytes each when they are Latch ids, the two instants as
//! 32-bit Unix seconds, and 4-byte handles of interned strings and of the token binding), and
//! one 4-byte handle in each of two open-addressing tables (`hashbrown::HashTable`) that find a
//! slot by credential HMAC or by lease id. The strings leases share (subject, audience, scope,
//! resource) are stored once in an [`Interner`], reference-counted, and freed with their last
//! lease; the rare token binding (DPoP key, actor) sits in a side [`Slab`]. After a wave of
//! leases ends, the slots and tables are rebuilt to fit (see `shrink_if_sparse`).

use std::hash::{BuildHasher, Hash, RandomState};

use hashbrown::HashTable;

use super::LiveEntry;
use crate::model::TokenBinding;

/// Values by 4-byte handle, with freed handles reused first.
#[derive(Debug)]
struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    fn insert(&mut self, v: T) -> u32 {
        while let Some(i) = self.free.pop() {
            // Defensive: a handle that is not free is never handed out twice.
            if let Some(item @ None) = self.items.get_mut(i as usize) {
                *item = Some(v);
                return i;
            }
        }
        self.items.push(Some(v));
        u32::try_from(self.items.len() - 1).unwrap_or(u32::MAX)
    }

    fn remove(&mut self, i: u32) -> Option<T> {
        let v = self.items.get_mut(i as usize)?.take()?;
        self.free.push(i);
        Some(v)
    }

    fn get(&self, i: u32) -> Option<&T> {
        self.items.get(i as usize)?.as_ref()
    }

    fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        self.items.get_mut(i as usize)?.as_mut()
    }
}

/// A handle of an interned string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Sym(u32);

/// Strings shared by many leases, stored once and freed when their last reference goes.
#[derive(Debug, Default)]
struct Interner {
    /// Text and number of references, by handle.
    strings: Slab<(Box<str>, u32)>,
    /// Handles by the hash of their text.
    table: HashTable<u32>,
    hasher: RandomState,
}

impl Interner {
    /// The text of handle `i` in `strings`, unless freed.
    fn text_of(strings: &Slab<(Box<str>, u32)>, i: u32) -> Option<&str> {
        strings.get(i).map(|(t, _)| &**t)
    }

    /// The handle of `s` if it is interned (no reference taken).
    fn find(&self, s: &str) -> Option<Sym> {
        let hash = self.hasher.hash_one(s);
        self.table
            .find(hash, |&i| Self::text_of(&self.strings, i) == Some(s))
            .map(|&i| Sym(i))
    }

    /// The handle of `s`, one more reference to it.
    fn intern(&mut self, s: &str) -> Sym {
        if let Some(sym) = self.find(s)
            && let Some((_, refs)) = self.strings.get_mut(sym.0)
        {
            *refs += 1;
            return sym;
        }
        let i = self.strings.insert((Box::from(s), 1));
        let Self {
            strings,
            table,
            hasher,
        } = self;
        table.insert_unique(hasher.hash_one(s), i, |&j| {
            hasher.hash_one(Self::text_of(strings, j).unwrap_or_default())
        });
        Sym(i)
    }

    /// Drops one reference to `sym`, freeing its text with the last.
    fn release(&mut self, sym: Sym) {
        let Some((_, refs)) = self.strings.get_mut(sym.0) else {
            return;
        };
        *refs -= 1;
        if *refs > 0 {
            return;
        }
        if let Some((text, _)) = self.strings.remove(sym.0)
            && let Ok(e) = self
                .table
                .find_entry(self.hasher.hash_one(&*text), |&j| j == sym.0)
        {
            e.remove();
        }
    }

    fn get(&self, sym: Sym) -> &str {
        Self::text_of(&self.strings, sym.0).unwrap_or_default()
    }

    /// Strings currently interned.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.len()
    }
}

/// A Latch id (`lease_…`, `task_…`: a prefix, `_` and 32 lowercase hex digits, see
/// [`crate::model::new_id`]) as its 16 bytes, or any other id as an interned string. Ids are
/// unique per lease and mostly per task, so interning them would cost a heap string each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IdKey {
    Latch([u8; 16]),
    Other(Sym),
}

/// Prefixes of the ids a slot holds.
const LEASE: &str = "lease_";
const TASK: &str = "task_";

/// The 16 bytes of `id` if it is `prefix` and 32 lowercase hex digits (lowercase only, so that
/// the id written back is the one read).
fn latch_id(id: &str, prefix: &str) -> Option<[u8; 16]> {
    let h = id.strip_prefix(prefix)?;
    if h.len() != 32 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut raw = [0u8; 16];
    hex::decode_to_slice(h, &mut raw).ok()?;
    Some(raw)
}

/// No token binding (the handle a slot holds for a plain bearer credential).
const UNBOUND: u32 = u32::MAX;

/// One live lease's entry.
#[derive(Debug)]
struct Slot {
    /// HMAC of the current credential, raw.
    hmac: [u8; 32],
    lease: IdKey,
    task: IdKey,
    /// Issued at and expiry, Unix seconds (a lease outside 1970–2106 is not cached).
    iat: u32,
    exp: u32,
    sub: Sym,
    aud: Sym,
    scope: Sym,
    resource: Sym,
    /// Handle of the token binding in [`LiveEntries::bindings`], or [`UNBOUND`].
    binding: u32,
    require_dpop: bool,
}

/// The credential HMAC (lowercase hex of HMAC-SHA256, as [`crate::digest::CredentialHasher`]
/// writes it) as raw bytes; `None` for any other text, which is then never cached.
fn raw_hmac(hex_text: &str) -> Option<[u8; 32]> {
    let mut raw = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut raw).ok()?;
    Some(raw)
}

/// The table hash of a credential HMAC: its first eight bytes. An HMAC under the broker's
/// secret key is uniformly distributed and cannot be steered by whoever chooses the value
/// introspected, so no further hashing is needed (nor any defence against flooding).
fn hmac_hash(raw: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&raw[..8]);
    u64::from_le_bytes(first)
}

/// Live leases by credential HMAC and by lease id: at most one slot per lease and per HMAC.
#[derive(Debug, Default)]
pub(super) struct LiveEntries {
    slots: Slab<Slot>,
    by_hmac: HashTable<u32>,
    by_lease: HashTable<u32>,
    strings: Interner,
    /// Token bindings of the slots that have one.
    bindings: Slab<TokenBinding>,
    /// Hashes lease ids (random keys: ids from the store are not trusted to be spread).
    hasher: RandomState,
}

impl LiveEntries {
    fn find_hmac(&self, raw: &[u8; 32]) -> Option<u32> {
        self.by_hmac
            .find(hmac_hash(raw), |&i| {
                self.slots.get(i).is_some_and(|s| &s.hmac == raw)
            })
            .copied()
    }

    /// The key of id `id` if it may be in the index (never interns).
    fn id_key(&self, id: &str, prefix: &str) -> Option<IdKey> {
        match latch_id(id, prefix) {
            Some(raw) => Some(IdKey::Latch(raw)),
            None => self.strings.find(id).map(IdKey::Other),
        }
    }

    fn intern_id(&mut self, id: &str, prefix: &str) -> IdKey {
        match latch_id(id, prefix) {
            Some(raw) => IdKey::Latch(raw),
            None => IdKey::Other(self.strings.intern(id)),
        }
    }

    fn id_text(&self, key: IdKey, prefix: &str) -> String {
        match key {
            IdKey::Latch(raw) => format!("{prefix}{}", hex::encode(raw)),
            IdKey::Other(sym) => self.strings.get(sym).to_owned(),
        }
    }

    fn find_lease(&self, key: &IdKey) -> Option<u32> {
        self.by_lease
            .find(self.hasher.hash_one(key), |&i| {
                self.slots.get(i).is_some_and(|s| &s.lease == key)
            })
            .copied()
    }

    /// The entry of the credential whose HMAC is `hmac` (lowercase hex), if cached.
    pub(super) fn get(&self, hmac: &str) -> Option<LiveEntry> {
        let s = self.slots.get(self.find_hmac(&raw_hmac(hmac)?)?)?;
        Some(self.entry_of(s))
    }

    fn entry_of(&self, s: &Slot) -> LiveEntry {
        let text = |sym| self.strings.get(sym).to_owned();
        LiveEntry {
            lease_id: self.id_text(s.lease, LEASE),
            task_id: self.id_text(s.task, TASK),
            sub: text(s.sub),
            aud: text(s.aud),
            scope: text(s.scope),
            resource: text(s.resource),
            iat: s.iat.into(),
            exp: s.exp.into(),
            binding: self
                .bindings
                .get(s.binding)
                .cloned()
                .unwrap_or(TokenBinding::NONE),
            require_dpop: s.require_dpop,
        }
    }

    /// Whether a credential whose HMAC is `hmac` is cached.
    pub(super) fn contains(&self, hmac: &str) -> bool {
        raw_hmac(hmac).is_some_and(|raw| self.find_hmac(&raw).is_some())
    }

    /// Caches `e` as the live entry of its lease, whose current credential has HMAC `hmac`,
    /// replacing whatever was cached for that lease or that credential. An HMAC that is not
    /// 64 hex digits, or an instant outside 32-bit Unix seconds, is not cached (the lookup
    /// then reads the store).
    pub(super) fn insert(&mut self, hmac: &str, e: &LiveEntry) {
        self.remove_lease(&e.lease_id);
        if let Some(raw) = raw_hmac(hmac) {
            self.insert_raw(raw, e);
        }
    }

    /// [`insert`](Self::insert) of a raw HMAC, once `e`'s lease has no entry.
    fn insert_raw(&mut self, raw: [u8; 32], e: &LiveEntry) {
        if let Some(i) = self.find_hmac(&raw) {
            self.remove_slot(i);
        }
        let (Ok(iat), Ok(exp)) = (u32::try_from(e.iat), u32::try_from(e.exp)) else {
            return;
        };
        // Room for every handle this entry may take (a slot, a binding, six strings), so that
        // no handle can wrap; far beyond what memory allows anyway.
        let full = |n: usize| n >= (u32::MAX - 8) as usize;
        if full(self.slots.items.len())
            || full(self.bindings.items.len())
            || full(self.strings.strings.items.len())
        {
            return;
        }
        let lease = self.intern_id(&e.lease_id, LEASE);
        let task = self.intern_id(&e.task_id, TASK);
        let binding = if e.binding.is_empty() {
            UNBOUND
        } else {
            self.bindings.insert(e.binding.clone())
        };
        let st = &mut self.strings;
        let slot = Slot {
            hmac: raw,
            lease,
            task,
            iat,
            exp,
            sub: st.intern(&e.sub),
            aud: st.intern(&e.aud),
            scope: st.intern(&e.scope),
            resource: st.intern(&e.resource),
            binding,
            require_dpop: e.require_dpop,
        };
        let lease_hash = self.hasher.hash_one(slot.lease);
        let i = self.slots.insert(slot);
        let Self {
            slots,
            by_hmac,
            by_lease,
            hasher,
            ..
        } = self;
        by_hmac.insert_unique(hmac_hash(&raw), i, |&j| {
            slots.get(j).map_or(0, |s| hmac_hash(&s.hmac))
        });
        by_lease.insert_unique(lease_hash, i, |&j| {
            slots.get(j).map_or(0, |s| hasher.hash_one(s.lease))
        });
    }

    /// Forgets lease `lease_id`'s entry, if any.
    pub(super) fn remove_lease(&mut self, lease_id: &str) {
        if let Some(i) = self
            .id_key(lease_id, LEASE)
            .and_then(|k| self.find_lease(&k))
        {
            self.remove_slot(i);
        }
    }

    /// Forgets the entry of the credential whose HMAC is `hmac`, if any.
    pub(super) fn remove_hmac(&mut self, hmac: &str) {
        if let Some(i) = raw_hmac(hmac).and_then(|raw| self.find_hmac(&raw)) {
            self.remove_slot(i);
        }
    }

    fn remove_slot(&mut self, i: u32) {
        let Some(s) = self.slots.remove(i) else {
            return;
        };
        if let Ok(e) = self.by_hmac.find_entry(hmac_hash(&s.hmac), |&j| j == i) {
            e.remove();
        }
        if let Ok(e) = self
            .by_lease
            .find_entry(self.hasher.hash_one(s.lease), |&j| j == i)
        {
            e.remove();
        }
        for key in [s.lease, s.task] {
            if let IdKey::Other(sym) = key {
                self.strings.release(sym);
            }
        }
        for sym in [s.sub, s.aud, s.scope, s.resource] {
            self.strings.release(sym);
        }
        self.bindings.remove(s.binding);
        self.shrink_if_sparse();
    }

    /// After a wave of leases ends, gives memory back: once at most a quarter of the room
    /// the slab and the tables hold is in use (and it is not small), the live slots are moved
    /// to a slab that fits them and both tables are built again for it; the interner's table
    /// is shrunk to fit. Nothing is allocated per entry, so this costs tens of nanoseconds
    /// per live entry under the index's write lock, and it is amortized O(1) per removal: a
    /// rebuild of `n` entries follows at least `n` removals since the previous one.
    fn shrink_if_sparse(&mut self) {
        let live = self.by_hmac.len();
        // Buckets of a table of 4-byte handles: one control byte and four data bytes each.
        let buckets = self.by_hmac.allocation_size() / (size_of::<u32>() + 1);
        let room = self.slots.items.len().max(buckets);
        if room < 4096 || live.saturating_mul(4) > room {
            return;
        }
        let mut slots = Slab::default();
        slots.items.reserve_exact(live);
        slots.items.extend(
            std::mem::take(&mut self.slots.items)
                .into_iter()
                .filter(Option::is_some),
        );
        let mut by_hmac = HashTable::with_capacity(live);
        let mut by_lease = HashTable::with_capacity(live);
        let get = |j: u32| slots.get(j);
        for (i, s) in slots.items.iter().enumerate() {
            let (Some(s), Ok(i)) = (s, u32::try_from(i)) else {
                continue;
            };
            by_hmac.insert_unique(hmac_hash(&s.hmac), i, |&j| {
                get(j).map_or(0, |s| hmac_hash(&s.hmac))
            });
            by_lease.insert_unique(self.hasher.hash_one(s.lease), i, |&j| {
                get(j).map_or(0, |s| self.hasher.hash_one(s.lease))
            });
        }
        self.slots = slots;
        self.by_hmac = by_hmac;
        self.by_lease = by_lease;
        let Interner {
            strings,
            table,
            hasher,
        } = &mut self.strings;
        table.shrink_to(0, |&j| {
            hasher.hash_one(Interner::text_of(strings, j).unwrap_or_default())
        });
    }

    /// Forgets everything, returning the memory.
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Number of cached entries.
    pub(super) fn len(&self) -> usize {
        self.by_hmac.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn hmac(n: u8) -> String {
        hex::encode([n; 32])
    }

    fn entry(lease: &str, task: &str, jkt: Option<&str>) -> LiveEntry {
        LiveEntry {
            lease_id: lease.into(),
            task_id: task.into(),
            sub: format!("sub-of-{task}"),
            aud: "https://api.example".into(),
            scope: "read write".into(),
            resource: "api".into(),
            iat: 1_700_000_000,
            exp: 1_700_000_300,
            binding: TokenBinding {
                jkt: jkt.map(Into::into),
                ..TokenBinding::NONE
            },
            require_dpop: jkt.is_some(),
        }
    }

    fn same(a: &LiveEntry, b: &LiveEntry) -> bool {
        (
            &a.lease_id,
            &a.task_id,
            &a.sub,
            &a.aud,
            &a.scope,
            &a.resource,
            a.iat,
            a.exp,
            &a.binding,
            a.require_dpop,
        ) == (
            &b.lease_id,
            &b.task_id,
            &b.sub,
            &b.aud,
            &b.scope,
            &b.resource,
            b.iat,
            b.exp,
            &b.binding,
            b.require_dpop,
        )
    }

    #[test]
    fn an_entry_reads_back_as_written() {
        let mut ix = LiveEntries::default();
        let (lease_id, task_id) = (crate::model::new_id("lease"), crate::model::new_id("task"));
        for (n, id) in [
            (1, lease_id.as_str()),
            (2, "lease_ABCDEF"),
            (3, "legacy-17"),
        ] {
            let e = entry(
                id,
                if n == 1 { &task_id } else { "task_1" },
                (n == 2).then_some("thumb"),
            );
            ix.insert(&hmac(n), &e);
            assert!(same(&ix.get(&hmac(n)).unwrap(), &e), "{id}");
        }
        // Uppercase hex is not a Latch id: it is kept verbatim, not lowercased.
        let upper = "lease_0123456789ABCDEF0123456789ABCDEF";
        ix.insert(&hmac(4), &entry(upper, "t", None));
        assert_eq!(ix.get(&hmac(4)).unwrap().lease_id, upper);
        assert_eq!(ix.len(), 4);
        assert!(ix.get("not-hex").is_none() && !ix.contains(&hmac(9)));
        ix.insert("not-hex", &entry("lease_x", "t", None));
        assert_eq!(ix.len(), 4, "an HMAC that is not hex is never cached");
        let mut past_2106 = entry("lease_y", "t", None);
        past_2106.exp = i64::from(u32::MAX) + 1;
        ix.insert(&hmac(5), &past_2106);
        assert!(
            ix.get(&hmac(5)).is_none(),
            "an instant past 32 bits is not cached"
        );
        // Replacing a lease's entry with one of an instant not cached leaves no stale copy.
        let mut e = entry(&lease_id, &task_id, None);
        ix.insert(&hmac(6), &e);
        e.iat = -1;
        ix.insert(&hmac(7), &e);
        assert!(ix.get(&hmac(6)).is_none() && ix.get(&hmac(7)).is_none());
    }

    #[test]
    fn a_slot_stays_small() {
        // What the RSS goal (a million live leases in 200 MB) is built on.
        assert!(
            size_of::<Option<Slot>>() <= 120,
            "{}",
            size_of::<Option<Slot>>()
        );
    }

    #[test]
    fn memory_is_given_back_after_a_wave_ends() {
        let mut ix = LiveEntries::default();
        let id = |n: u32| format!("lease_{n:032x}");
        let key = |n: u32| hex::encode([n.to_le_bytes(); 8].concat());
        // Foreign ids and bindings too, so the interner and the binding slab fill up.
        let make = |n: u32| {
            let lease = if n.is_multiple_of(2) {
                id(n)
            } else {
                format!("other-{n}")
            };
            entry(
                &lease,
                &format!("task-{n}"),
                n.is_multiple_of(3).then_some("jkt"),
            )
        };
        for n in 0..20_000 {
            ix.insert(&key(n), &make(n));
        }
        let peak = ix.by_hmac.allocation_size();
        // In an order unrelated to insertion (7919 is prime to 20,000), all but 1,000.
        let order: Vec<u32> = (0..20_000).map(|n| (n * 7_919) % 20_000).collect();
        let (gone, kept) = order.split_at(19_000);
        for &n in gone {
            ix.remove_lease(&make(n).lease_id);
        }
        assert!(
            ix.by_hmac.allocation_size() <= peak / 8,
            "{} of {peak}",
            ix.by_hmac.allocation_size()
        );
        assert!(ix.by_lease.allocation_size() <= peak / 8);
        assert!(ix.slots.items.len() <= 4_096, "{}", ix.slots.items.len());
        // The interner's table shrinks (its texts were freed with their last lease); its slab
        // and the bindings' keep their 24 bytes per handle at the peak, reused first.
        assert!(ix.strings.table.allocation_size() <= peak / 4);
        for &n in kept {
            assert!(same(&ix.get(&key(n)).unwrap(), &make(n)), "{n} still found");
        }
        // Handles freed before the rebuild are never handed out twice.
        for n in 30_000..36_000 {
            ix.insert(&key(n), &make(n));
        }
        for n in kept.iter().copied().chain(30_000..36_000) {
            assert!(same(&ix.get(&key(n)).unwrap(), &make(n)), "{n}");
        }
        assert_eq!(ix.len(), 7_000);
        for n in kept.iter().copied().chain(30_000..36_000) {
            ix.remove_lease(&make(n).lease_id);
        }
        assert_eq!((ix.len(), ix.strings.len()), (0, 0));
        assert!(ix.slots.items.len() <= 4_096);
        ix.insert(&key(1), &make(1));
        assert!(
            ix.get(&key(1)).is_some(),
            "usable after shrinking to nothing"
        );
    }

    #[test]
    fn strings_are_shared_and_freed_with_their_last_lease() {
        let mut ix = LiveEntries::default();
        for n in 0..50u8 {
            ix.insert(&hmac(n), &entry(&format!("l{n}"), "task_1", None));
        }
        // sub, aud, scope, resource: four strings for fifty leases; the task id `task_1` and the
        // lease ids are not Latch ids, so they are interned too (each lease id once).
        assert_eq!(ix.strings.len(), 5 + 50);
        for n in 0..50u8 {
            ix.remove_lease(&format!("l{n}"));
        }
        assert_eq!((ix.len(), ix.strings.len(), ix.by_lease.len()), (0, 0, 0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert { lease: u8, hmac: u8, task: u8 },
        RemoveLease(u8),
        RemoveHmac(u8),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..12, 0u8..12, 0u8..3).prop_map(|(lease, hmac, task)| Op::Insert { lease, hmac, task }),
            2 => (0u8..12).prop_map(Op::RemoveLease),
            2 => (0u8..12).prop_map(Op::RemoveHmac),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// Against a model (lease → (HMAC, entry)): every lookup answers what the model holds,
        /// at most one entry per lease and per HMAC, and every string is freed with its last
        /// lease.
        #[test]
        fn behaves_like_the_model(ops in proptest::collection::vec(op(), 1..80)) {
            let mut ix = LiveEntries::default();
            let mut model: HashMap<String, (String, LiveEntry)> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert { lease, hmac: h, task } => {
                        let id = if lease % 2 == 0 { format!("lease_{lease:032x}") } else { format!("other-{lease}") };
                        let task_id = if task == 0 { format!("task_{:032x}", 7) } else { format!("task_{task}") };
                        let e = entry(&id, &task_id, (h % 3 == 0).then_some("jkt"));
                        model.retain(|l, (mh, _)| *l != id && *mh != hmac(h));
                        model.insert(id, (hmac(h), e.clone()));
                        ix.insert(&hmac(h), &e);
                    }
                    Op::RemoveLease(lease) => {
                        let id = if lease % 2 == 0 { format!("lease_{lease:032x}") } else { format!("other-{lease}") };
                        model.remove(&id);
                        ix.remove_lease(&id);
                    }
                    Op::RemoveHmac(h) => {
                        model.retain(|_, (mh, _)| *mh != hmac(h));
                        ix.remove_hmac(&hmac(h));
                    }
                    Op::Clear => {
                        model.clear();
                        ix.clear();
                    }
                }
                prop_assert_eq!(ix.len(), model.len());
                prop_assert_eq!(ix.by_lease.len(), model.len());
                for h in 0u8..12 {
                    let want = model.values().find(|(mh, _)| *mh == hmac(h)).map(|(_, e)| e);
                    let got = ix.get(&hmac(h));
                    prop_assert_eq!(got.is_some(), want.is_some());
                    if let (Some(g), Some(w)) = (&got, want) {
                        prop_assert!(same(g, w));
                    }
                }
                let mut texts: std::collections::HashSet<String> = std::collections::HashSet::new();
                for (_, e) in model.values() {
                    texts.extend([e.sub.clone(), e.aud.clone(), e.scope.clone(), e.resource.clone()]);
                    if latch_id(&e.task_id, TASK).is_none() {
                        texts.insert(e.task_id.clone());
                    }
                    if latch_id(&e.lease_id, LEASE).is_none() {
                        texts.insert(e.lease_id.clone());
                    }
                }
                prop_assert_eq!(ix.strings.len(), texts.len());
                let bound = model.values().filter(|(_, e)| !e.binding.is_empty()).count();
                prop_assert_eq!(ix.bindings.items.iter().flatten().count(), bound);
            }
        }
    }
}
