//! `StoreError`: why a session store could not be used, shared by `store::Sessions` and the
//! backends (`redis_store`), so neither depends on the other for it.

/// A session store could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached (requests that need a session get 503).
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The operation needs a server-side store.
    #[error("the cookie store keeps no sessions on the server")]
    NotServerSide,
}
