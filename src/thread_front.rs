//! Each thread's last answer of one kind, in front of a shared cache: a client on a keep-alive
//! connection sends the same cookie or token again and again, and answering it from the
//! thread's own entry skips the shared cache's shard locks and access bits, which the worker
//! threads would otherwise fight over on every request (`session`'s opened cookies,
//! `token::cache`).
//!
//! An entry names its cache (a number, never reused: a reload's new cache never sees the old
//! one's entries) and holds the whole key text, compared in full, with a `stamp` the caller
//! reads back (a token's expiry). What it holds is first the shared value; the second time in a
//! row it is made the thread's own copy, so that from then on even its reference count is the
//! thread's alone, while clients that take turns on a thread cost no copy at all.

use std::cell::RefCell;
use std::sync::Arc;
use std::thread::LocalKey;

/// One thread's last answer of one kind.
pub struct Front<T: ?Sized> {
    cache: u64,
    key: String,
    value: Arc<T>,
    stamp: i64,
    own: bool,
}

/// Where a thread keeps its entry of one kind.
pub type Slot<T> = RefCell<Option<Front<T>>>;

/// The value and stamp kept for `key` in cache `cache`, when it is this thread's last answer of
/// this kind. `own` makes the thread's own copy of the value, the second time in a row.
pub fn get<T: ?Sized>(
    slot: &'static LocalKey<Slot<T>>,
    cache: u64,
    key: &str,
    own: impl FnOnce(&T) -> Arc<T>,
) -> Option<(Arc<T>, i64)> {
    slot.try_with(|slot| {
        let mut slot = slot.borrow_mut();
        let front = slot
            .as_mut()
            .filter(|front| front.cache == cache && front.key == key)?;
        if !front.own {
            front.value = own(&front.value);
            front.own = true;
        }
        Some((front.value.clone(), front.stamp))
    })
    .ok()
    .flatten()
}

/// Makes `value` (with `stamp`), the answer for `key` in cache `cache`, this thread's last
/// answer of its kind.
pub fn put<T: ?Sized>(
    slot: &'static LocalKey<Slot<T>>,
    cache: u64,
    key: &str,
    value: &Arc<T>,
    stamp: i64,
) {
    let _ = slot.try_with(|slot| {
        let mut slot = slot.borrow_mut();
        match slot.as_mut() {
            // The key's buffer is kept: a thread whose clients take turns allocates nothing.
            Some(front) => {
                front.cache = cache;
                front.key.clear();
                front.key.push_str(key);
                front.value = value.clone();
                front.stamp = stamp;
                front.own = false;
            }
            None => {
                *slot = Some(Front {
                    cache,
                    key: key.to_owned(),
                    value: value.clone(),
                    stamp,
                    own: false,
                });
            }
        }
    });
}
