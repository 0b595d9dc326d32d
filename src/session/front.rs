//! Each thread's last opened session cookie, in front of a `CookieJar`'s shared caches. A client
//! on a keep-alive connection sends the same cookie again and again; answering it from the
//! thread's own entry skips the shared caches' shard locks and access bits, which the worker
//! threads would otherwise fight over on every request.
//!
//! An entry names its jar (a jar's number, never reused: a reload's new jar with other secrets
//! never sees the old jar's entries) and holds the whole sealed text, compared in full. What it
//! holds is first the shared value; the second time in a row it is made the thread's own copy,
//! so that from then on even its reference count is the thread's alone, while clients that take
//! turns on a thread cost no copy at all.

use std::cell::RefCell;
use std::sync::Arc;
use std::thread::LocalKey;

/// One thread's last opened cookie of one kind.
pub(super) struct Front<T: ?Sized> {
    jar: u64,
    sealed: String,
    value: Arc<T>,
    own: bool,
}

/// Where a thread keeps its entry of one kind.
pub(super) type Slot<T> = RefCell<Option<Front<T>>>;

/// What `sealed` opened to in jar `jar`, when it is this thread's last cookie of this kind.
/// `own` makes the thread's own copy of the value, the second time in a row.
pub(super) fn get<T: ?Sized>(
    slot: &'static LocalKey<Slot<T>>,
    jar: u64,
    sealed: &str,
    own: impl FnOnce(&T) -> Arc<T>,
) -> Option<Arc<T>> {
    slot.try_with(|slot| {
        let mut slot = slot.borrow_mut();
        let front = slot
            .as_mut()
            .filter(|front| front.jar == jar && front.sealed == sealed)?;
        if !front.own {
            front.value = own(&front.value);
            front.own = true;
        }
        Some(front.value.clone())
    })
    .ok()
    .flatten()
}

/// Makes `value`, what `sealed` opened to in jar `jar`, this thread's last cookie of its kind.
pub(super) fn put<T: ?Sized>(
    slot: &'static LocalKey<Slot<T>>,
    jar: u64,
    sealed: &str,
    value: &Arc<T>,
) {
    let _ = slot.try_with(|slot| {
        let mut slot = slot.borrow_mut();
        match slot.as_mut() {
            // The text's buffer is kept: a thread whose clients take turns allocates nothing.
            Some(front) => {
                front.jar = jar;
                front.sealed.clear();
                front.sealed.push_str(sealed);
                front.value = value.clone();
                front.own = false;
            }
            None => {
                *slot = Some(Front {
                    jar,
                    sealed: sealed.to_owned(),
                    value: value.clone(),
                    own: false,
                });
            }
        }
    });
}
