//! A map whose entries lapse with time. Lapsed entries are dropped in one pass whenever the
//! map has doubled since the last pass, so an insert costs O(1) amortized; a lookup treats a
//! lapsed entry as absent. A pass on every insert made n inserts cost n²: an authenticated
//! user looping on `/authorize`, or a machine client revoking each token it asks for, held the
//! token service's lock longer with every request.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use crate::clock::UnixTime;

/// The size at which lapsed entries are first looked for.
const FIRST_PASS: usize = 1024;

/// Entries of `K` to `V`, each lapsed at a time `lapsed` tells.
#[derive(Debug)]
pub struct Lapsing<K, V> {
    entries: HashMap<K, V>,
    /// The size at which the next pass drops lapsed entries.
    pass_at: usize,
    /// Whether an entry has lapsed at a time.
    lapsed: fn(&V, UnixTime) -> bool,
    /// Entries looked at by the passes so far.
    #[cfg(test)]
    examined: usize,
}

impl<K: Eq + Hash, V> Lapsing<K, V> {
    /// An empty map whose entries have lapsed when `lapsed` says so.
    pub fn new(lapsed: fn(&V, UnixTime) -> bool) -> Self {
        Self {
            entries: HashMap::new(),
            pass_at: FIRST_PASS,
            lapsed,
            #[cfg(test)]
            examined: 0,
        }
    }

    /// Adds (or replaces) `key`'s entry at `now`, first dropping lapsed entries if the map
    /// doubled since the last time.
    pub fn insert(&mut self, key: K, value: V, now: UnixTime) {
        if self.entries.len() >= self.pass_at {
            let lapsed = self.lapsed;
            #[cfg(test)]
            {
                self.examined += self.entries.len();
            }
            self.entries.retain(|_, value| !lapsed(value, now));
            self.pass_at = (self.entries.len() * 2).max(FIRST_PASS);
        }
        self.entries.insert(key, value);
    }

    /// `key`'s entry, unless it lapsed by `now`.
    pub fn get<Q>(&self, key: &Q, now: UnixTime) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries
            .get(key)
            .filter(|value| !(self.lapsed)(value, now))
    }

    /// Whether an entry for `key` is held, lapsed or not: for a caller that refuses what lapsed
    /// on its own account (a revoked token past its `exp` is refused as expired).
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries.contains_key(key)
    }

    /// Takes `key`'s entry out: `None` when there is none or it lapsed by `now`.
    pub fn remove<Q>(&mut self, key: &Q, now: UnixTime) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries
            .remove(key)
            .filter(|value| !(self.lapsed)(value, now))
    }

    /// How many entries are held, lapsed ones not yet dropped included.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Lapsing<u32, UnixTime> {
        Lapsing::new(|until, now| *until <= now)
    }

    #[test]
    fn a_lapsed_entry_is_absent_before_it_is_dropped() {
        let mut entries = map();
        entries.insert(1, 100, 0);
        assert_eq!(entries.get(&1, 99), Some(&100));
        assert_eq!(entries.get(&1, 100), None);
        assert_eq!(entries.held(), 1, "still held, absent all the same");
        assert!(entries.contains_key(&1), "held, lapsed or not");
        assert!(!entries.contains_key(&2));
        assert_eq!(entries.remove(&1, 100), None);
        assert_eq!(entries.held(), 0);
        entries.insert(2, 100, 0);
        assert_eq!(entries.remove(&2, 50), Some(100));
    }

    /// Held entries stay within twice those live at the last pass (or the first pass's size), however many
    /// were added: each pass drops the lapsed, and the next waits until the map doubled; so the
    /// passes look at a few entries per insert, not at every entry held (as a pass on each
    /// insert did: here 100 000 inserts would have looked at about a billion).
    #[test]
    fn lapsed_entries_are_dropped_as_the_map_grows() {
        let mut entries = map();
        let mut most = 0;
        for n in 0..100_000 {
            // Each lives ten seconds; a thousand are added a second.
            let now = i64::from(n / 1000);
            entries.insert(n, now + 10, now);
            most = most.max(entries.held());
        }
        assert!(most <= 2 * 11_000, "{most}");
        assert!(most > 10_000, "the live ones are all kept: {most}");
        assert!(entries.examined <= 3 * 100_000, "{}", entries.examined);
        for n in 90_000..100_000 {
            assert!(entries.get(&n, 99).is_some(), "{n}");
        }
    }
}
