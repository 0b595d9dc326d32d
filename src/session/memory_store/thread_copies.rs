//! Each thread's private copies of the memory store's sessions, valid for one store and one
//! generation of it (the design is in `memory_store`'s doc comment).

use crate::session::StoredSession;
use std::cell::RefCell;

/// Sessions each thread keeps private copies of (the most recently used).
const COPIES_PER_THREAD: usize = 64;

/// One thread's copies of sessions read from store `store` at generation `generation`.
struct Copies {
    store: u64,
    generation: u64,
    sessions: quick_cache::unsync::Cache<String, StoredSession>,
}

thread_local! {
    static COPIES: RefCell<Option<Copies>> = const { RefCell::new(None) };
}

/// Runs `use_copies` on this thread's copies of store `store` at `generation`, emptied first
/// when they are of another store or generation; `None` while the thread is ending.
fn with_copies<T>(
    store: u64,
    generation: u64,
    use_copies: impl FnOnce(&mut Copies) -> T,
) -> Option<T> {
    COPIES
        .try_with(|copies| {
            let mut copies = copies.borrow_mut();
            let copies = copies.get_or_insert_with(|| Copies {
                store,
                generation,
                sessions: quick_cache::unsync::Cache::new(COPIES_PER_THREAD),
            });
            if copies.store != store || copies.generation != generation {
                copies.sessions.clear();
                copies.store = store;
                copies.generation = generation;
            }
            use_copies(copies)
        })
        .ok()
}

/// This thread's copy of session `id` of store `store`, if it made one at `generation`.
pub(super) fn find(store: u64, generation: u64, id: &str) -> Option<StoredSession> {
    with_copies(store, generation, |copies| copies.sessions.get(id).cloned()).flatten()
}

/// Keeps `stored`, session `id` of store `store` read at `generation`, as this thread's copy,
/// and returns it. The copy shares the session itself with the shared map (an `Arc`): a hit
/// then writes one reference count, where copying the session whole at every miss would cost
/// more whenever many sessions take turns (each miss would copy its tokens and claims).
pub(super) fn keep(store: u64, generation: u64, id: &str, stored: StoredSession) -> StoredSession {
    with_copies(store, generation, |copies| {
        copies.sessions.insert(id.to_owned(), stored.clone());
    });
    stored
}
