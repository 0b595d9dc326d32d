//! `store = "memory"`: sessions in this process, optionally kept in `state_file` so they
//! survive a restart. The file is rewritten whole, at most about once a second after a change
//! and at shutdown: written to a temporary file in the same directory (created anew, mode
//! 0600, never through a link someone left there), synced, then renamed over the old one, so a
//! crash mid-write leaves the previous file intact. Its sessions (ids and tokens) are sealed
//! with the session secrets like Redis's values (`seal::Sealer`; the first secret seals, every
//! listed one opens), so a copy of the file or a backup gives nobody a session; a file of an
//! older Tollgate, in clear, is read and sealed at the next write. The back-channel logout
//! tokens used are kept beside them (sealed too), so a logout token replayed after a restart
//! is still refused.
//!
//! Sessions are held compact (`compact::CompactSession`: decoded token bytes, claims not
//! repeated); the most recently used ones are also kept expanded, so a request does not pay
//! for expanding its session.
//!
//! A read that finds its session among the reading thread's own copies takes no shared lock.
//! With every worker thread serving the same sessions, taking the shared lock (its reader
//! count) and the shared expanded cache (a shard lock, an access bit) on every request would
//! bounce those cache lines between the cores. So each thread keeps its own copies of the
//! sessions it read last (`thread_copies`: at most 64, of one store at a time, named by the
//! store's never reused `id`), valid for one `generation` of the store. A copy shares the
//! session with the map (one reference count written per hit), so a miss costs no more than
//! before.
//! The generation is a counter that every change to the sessions bumps as it takes the write
//! lock (`write`, the only way to change them); a copy is served only while the store's
//! generation is still the one it was made at, which costs one load of a line nobody writes
//! while nothing changes. A copy is made from the shared map under the read lock, with the
//! generation read under that same lock, so it is never older than its generation. Hence a
//! session removed, replaced or touched on one thread is never served from another thread's
//! copy to a request that starts after the change returned: that request sees the new
//! generation and reads the shared map again.
//!
//! Any change makes every thread's copies stale (they are dropped on that thread's next
//! read): coarse, but with no bookkeeping per session, and changes (logins, logouts,
//! refreshes, the minutely expiry sweep, touches: each session's at most every 30 s) are
//! rare beside reads. The generation is bumped before the change is made, so a change that
//! panics midway (poisoning the lock, which fails every later read) leaves no copy in use.

mod thread_copies;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

use super::compact::{CompactSession, SessionFacts};
use super::seal::Sealer;
use super::{MAX_SESSIONS_PER_USER, Session, StoredSession};
use crate::clock::UnixTime;

/// Sessions kept expanded (the most recently used).
const EXPANDED: usize = 512;

/// The key of a user's sessions: its provider and `sub`.
fn user_key(facts: &SessionFacts<'_>) -> String {
    format!("{}\0{}", facts.provider, facts.sub)
}

/// A stored session: shared, so the state file's write takes a snapshot of every session
/// under the lock (a reference count each) and expands them after it.
#[derive(Clone)]
struct Entry {
    compact: Arc<CompactSession>,
    last_seen: UnixTime,
}

impl Entry {
    fn new(session: &Session, last_seen: UnixTime) -> Self {
        Self {
            compact: Arc::new(CompactSession::new(session)),
            last_seen,
        }
    }

    fn expand(&self) -> Option<StoredSession> {
        let session = self.compact.expand();
        if session.is_none() {
            tracing::error!("a stored session did not expand; it is treated as ended");
        }
        Some(StoredSession {
            session: Arc::new(session?),
            last_seen: self.last_seen,
        })
    }
}

/// Sessions kept in memory.
pub struct MemoryStore {
    sessions: RwLock<HashMap<String, Entry>>,
    /// Bumped by every change to `sessions`, under its write lock (`write`).
    generation: AtomicU64,
    /// Names this store in threads' copies; unique per store (never an address, which a later
    /// store could reuse).
    id: u64,
    /// Expanded copies of recently used sessions; changed only under the write lock of
    /// `sessions`, filled under its read lock, so a copy is never older than its entry.
    expanded: quick_cache::sync::Cache<String, Arc<Session>>,
    state_file: Option<PathBuf>,
    /// Seals the state file: the live config's session secrets.
    sealer: arc_swap::ArcSwap<Sealer>,
    /// Held while the state file is written: the write-behind, a replaced store's last write
    /// and shutdown's may overlap, and share the temporary file's name.
    writing: std::sync::Mutex<()>,
    dirty: AtomicBool,
    /// Counts the changes the state file must hold (`mark_changed`, touches too).
    changes: AtomicU64,
    changed: tokio::sync::Notify,
    /// The last write of the state file: what it held and whether it was written.
    written: tokio::sync::watch::Sender<Written>,
    /// Back-channel logout tokens used (digests of provider and `jti`), each with when it may
    /// be forgotten; kept in the state file too, so a restart does not take a replay.
    logout_tokens: std::sync::Mutex<HashMap<String, UnixTime>>,
    /// Provider sessions a back-channel logout ended (digests of provider and `sid`), each
    /// with when it may be forgotten and when the provider ended it (its logout token's
    /// `iat`): for a sign-in or refresh storing one of them meanwhile.
    ended_provider_sessions: std::sync::Mutex<HashMap<String, (UnixTime, UnixTime)>>,
    /// Each user's session ids (`user_key`), oldest first; ids of sessions ended since are
    /// dropped at the user's next sign-in and by `remove_where` (the minutely sweep). Taken
    /// only under the write lock of `sessions`.
    users: std::sync::Mutex<HashMap<String, Vec<String>>>,
}

/// The most used logout tokens remembered; beyond it the soonest forgotten goes first.
const LOGOUT_TOKENS_MOST: usize = 100_000;

/// A write of the state file, as those waiting for theirs see it.
#[derive(Debug, Clone, Copy, Default)]
struct Written {
    /// Counts the writes tried.
    attempt: u64,
    /// The changes the write held (every one counted up to this).
    changes: u64,
    /// Whether the file was written.
    ok: bool,
}

/// How long an ended session waits for the state file to hold its end: the write-behind
/// writes about a second after a change.
const DURABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The state file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {message}")]
pub struct StateFileError {
    path: String,
    message: String,
}

/// The state file: `sealed` holds the sessions' JSON sealed for [`STATE_FILE_PURPOSE`],
/// `logout_tokens` the used logout tokens' sealed for [`LOGOUT_TOKENS_PURPOSE`] (a field an
/// older Tollgate ignores, so it still reads the sessions).
#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    sealed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    logout_tokens: Option<String>,
}

/// What a state file holds.
struct Opened {
    sessions: HashMap<String, StoredSession>,
    logout_tokens: HashMap<String, UnixTime>,
    /// Written by an older Tollgate, in clear.
    in_clear: bool,
}

/// What a state file held that has not ended.
#[derive(Default)]
struct Restored {
    sessions: HashMap<String, Entry>,
    logout_tokens: HashMap<String, UnixTime>,
    /// Written by an older Tollgate, in clear.
    in_clear: bool,
}

/// The state file of a Tollgate before sealing: the sessions in clear.
#[derive(Deserialize)]
struct ClearStateFile {
    version: u32,
    sessions: HashMap<String, StoredSession>,
}

/// The sealing purpose of the state file's sessions.
const STATE_FILE_PURPOSE: &str = "memory-state-file";

/// The sealing purpose of the state file's used logout tokens.
const LOGOUT_TOKENS_PURPOSE: &str = "memory-state-file-logout-tokens";

impl MemoryStore {
    /// A store, loaded from `state_file` when it exists, whose file `sealer` seals and opens.
    /// A file that cannot be read as a state file (or opened with any listed secret) is moved
    /// aside (`<name>.unreadable-<time>`) with an error log, never silently dropped, and the
    /// store starts empty.
    pub fn open(state_file: Option<PathBuf>, sealer: Sealer, now: UnixTime) -> Self {
        let restored = state_file
            .as_deref()
            .map(|path| read_state(path, &sealer, now))
            .unwrap_or_default();
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let mut restored_ids: Vec<(&String, SessionFacts<'_>)> = restored
            .sessions
            .iter()
            .map(|(id, entry)| (id, entry.compact.facts()))
            .collect();
        restored_ids.sort_by_key(|(_, facts)| facts.created_at);
        let mut users: HashMap<String, Vec<String>> = HashMap::new();
        for (id, facts) in restored_ids {
            users.entry(user_key(&facts)).or_default().push(id.clone());
        }
        let store = Self {
            users: std::sync::Mutex::new(users),
            sessions: RwLock::new(restored.sessions),
            generation: AtomicU64::new(0),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            expanded: quick_cache::sync::Cache::new(EXPANDED),
            state_file,
            sealer: arc_swap::ArcSwap::from_pointee(sealer),
            writing: std::sync::Mutex::new(()),
            dirty: AtomicBool::new(false),
            changes: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
            // The file holds what was read from it (a file in clear counts as a change).
            written: tokio::sync::watch::Sender::new(Written {
                ok: true,
                ..Written::default()
            }),
            logout_tokens: std::sync::Mutex::new(restored.logout_tokens),
            ended_provider_sessions: std::sync::Mutex::new(HashMap::new()),
        };
        if restored.in_clear {
            // Sealed at the write-behind's first write, not left in clear until a change.
            store.mark_changed();
        }
        store
    }

    /// Seals the state file with `sealer` from now on (a reload's session secrets), and
    /// rewrites it with them.
    pub fn seal_with(&self, sealer: Sealer) {
        self.sealer.store(Arc::new(sealer));
        self.mark_changed();
    }

    fn mark_changed(&self) {
        if self.state_file.is_some() {
            // Counted after the change, before it is marked: a write that finds the mark
            // holds the change.
            self.changes.fetch_add(1, Ordering::SeqCst);
            self.dirty.store(true, Ordering::SeqCst);
            self.changed.notify_one();
        }
    }

    /// The write lock on the sessions, the only way to change them. Taking it bumps the
    /// generation, before any change is made, so every thread's copies are stale from here on.
    fn write(&self) -> Option<RwLockWriteGuard<'_, HashMap<String, Entry>>> {
        let sessions = self.sessions.write().ok()?;
        self.generation.fetch_add(1, Ordering::Release);
        Some(sessions)
    }

    /// The session `id`, if present: this thread's copy while nothing changed since it was
    /// made, else read from the shared map (and copied for this thread).
    pub fn get(&self, id: &str) -> Option<StoredSession> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(copy) = thread_copies::find(self.id, generation, id) {
            return Some(copy);
        }
        let (stored, generation) = self.read(id)?;
        Some(thread_copies::keep(self.id, generation, id, stored))
    }

    /// The session `id` from the shared map, with the generation it is current at.
    fn read(&self, id: &str) -> Option<(StoredSession, u64)> {
        let sessions = self.sessions.read().ok()?;
        // Under the read lock no change can bump it: this is the map's generation.
        let generation = self.generation.load(Ordering::Acquire);
        let entry = sessions.get(id)?;
        if let Some(session) = self.expanded.get(id) {
            let stored = StoredSession {
                session,
                last_seen: entry.last_seen,
            };
            return Some((stored, generation));
        }
        let stored = entry.expand()?;
        self.expanded.insert(id.to_owned(), stored.session.clone());
        Some((stored, generation))
    }

    /// Records that the session was used at `now`.
    pub fn touch(&self, id: &str, now: UnixTime) {
        if let Some(mut sessions) = self.write()
            && let Some(entry) = sessions.get_mut(id)
        {
            entry.last_seen = now;
        }
        self.mark_changed();
    }

    /// Stores a new session under `id`, the newest of its user's.
    pub fn insert(&self, id: String, session: Arc<Session>, now: UnixTime) {
        let entry = Entry::new(&session, now);
        let user = user_key(&entry.compact.facts());
        if let Some(mut sessions) = self.write() {
            let mut users = self
                .users
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let ids = users.entry(user).or_default();
            ids.retain(|listed| *listed != id && sessions.contains_key(listed));
            ids.push(id.clone());
            self.expanded.insert(id.clone(), session);
            sessions.insert(id, entry);
        }
        self.mark_changed();
    }

    /// Ends the oldest sessions of the user of session `id` beyond
    /// [`MAX_SESSIONS_PER_USER`], never `id` itself; returns how many it ended.
    pub fn end_beyond_the_users_limit(&self, id: &str) -> usize {
        let Some(mut sessions) = self.write() else {
            return 0;
        };
        let Some(user) = sessions
            .get(id)
            .map(|entry| user_key(&entry.compact.facts()))
        else {
            return 0;
        };
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(ids) = users.get_mut(&user) else {
            return 0;
        };
        ids.retain(|listed| sessions.contains_key(listed));
        let beyond = ids.len().saturating_sub(MAX_SESSIONS_PER_USER);
        let ended: Vec<String> = ids
            .iter()
            .filter(|listed| *listed != id)
            .take(beyond)
            .cloned()
            .collect();
        ids.retain(|listed| !ended.contains(listed));
        for oldest in &ended {
            self.expanded.remove(oldest);
            sessions.remove(oldest);
        }
        drop((users, sessions));
        if !ended.is_empty() {
            self.mark_changed();
        }
        ended.len()
    }

    /// Stores `session` under `id` only while the stored session still holds the tokens of
    /// `from` (the session its refresh started from), checked and written under one lock: a logout on another thread in between is
    /// never undone. `Err(Some(current))` when another session is stored by now (a refresh that
    /// came first), `Err(None)` when the session is gone.
    ///
    /// # Errors
    /// As above: nothing was written.
    pub fn replace_refreshed(
        &self,
        id: &str,
        from: &Session,
        session: Arc<Session>,
        now: UnixTime,
    ) -> Result<(), Option<Arc<Session>>> {
        {
            let mut sessions = self.write().ok_or(None)?;
            let entry = sessions.get(id).ok_or(None)?;
            let current = match self.expanded.get(id) {
                Some(current) => current,
                None => entry.expand().ok_or(None)?.session,
            };
            // Another refresh's result, or this one already stored (a provider that does
            // not rotate sends the same refresh token back: the access token tells).
            if !current.holds_the_tokens_of(from) || current.holds_the_tokens_of(&session) {
                return Err(Some(current));
            }
            let entry = Entry::new(&session, now);
            self.expanded.insert(id.to_owned(), session);
            sessions.insert(id.to_owned(), entry);
        }
        self.mark_changed();
        Ok(())
    }

    /// Removes the session `id`; returns whether it was there.
    pub fn remove(&self, id: &str) -> bool {
        let removed = match self.write() {
            Some(mut sessions) => {
                self.expanded.remove(id);
                sessions.remove(id).is_some()
            }
            None => false,
        };
        if removed {
            self.mark_changed();
        }
        removed
    }

    /// Removes the sessions `matching` selects (given the id, the session's facts and when it
    /// was last used); returns how many.
    pub fn remove_where(
        &self,
        matching: impl Fn(&str, &SessionFacts<'_>, UnixTime) -> bool,
    ) -> usize {
        let removed = match self.write() {
            Some(mut sessions) => {
                let before = sessions.len();
                sessions.retain(|id, entry| {
                    let remove = matching(id, &entry.compact.facts(), entry.last_seen);
                    if remove {
                        self.expanded.remove(id);
                    }
                    !remove
                });
                // Ended sessions, these and those ended one by one, leave their users' lists.
                self.users
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .retain(|_, ids| {
                        ids.retain(|id| sessions.contains_key(id));
                        !ids.is_empty()
                    });
                before - sessions.len()
            }
            None => 0,
        };
        if removed > 0 {
            self.mark_changed();
        }
        removed
    }

    /// Whether the logout token `key` was used and is still remembered at `now`.
    pub fn logout_token_used(&self, key: &str, now: UnixTime) -> bool {
        self.logout_tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .is_some_and(|until| now < *until)
    }

    /// Remembers the logout token `key` as used until `until`, and waits until the state file
    /// holds it and every change before it (as [`Self::durable`]): the sessions its logout
    /// removed too.
    ///
    /// # Errors
    /// When the state file was not written; the token is then forgotten again, so that the
    /// provider's retry is served, not refused as a replay.
    pub async fn remember_logout_token(
        &self,
        key: String,
        now: UnixTime,
        until: UnixTime,
    ) -> Result<(), StateFileError> {
        let tokens = || {
            self.logout_tokens
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        {
            let mut tokens = tokens();
            // Forgotten once their age alone refuses them, so the file holds about a day's.
            tokens.retain(|_, kept_until| now < *kept_until);
            if tokens.len() >= LOGOUT_TOKENS_MOST
                && let Some(soonest) = tokens
                    .iter()
                    .min_by_key(|(_, kept_until)| **kept_until)
                    .map(|(soonest, _)| soonest.clone())
            {
                tokens.remove(&soonest);
            }
            tokens.insert(key.clone(), until);
        }
        self.mark_changed();
        let written = self.durable().await;
        if written.is_err() {
            let mut tokens = tokens();
            if tokens.get(&key) == Some(&until) {
                tokens.remove(&key);
            }
        }
        written
    }

    /// Remembers until `until` that the provider ended the provider session `key` at `at`.
    pub fn mark_provider_session_ended(
        &self,
        key: String,
        at: UnixTime,
        (now, until): (UnixTime, UnixTime),
    ) {
        let mut ended = self
            .ended_provider_sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ended.len() >= LOGOUT_TOKENS_MOST {
            ended.retain(|_, (kept_until, _)| now < *kept_until);
        }
        // Full of live marks: the soonest forgotten goes, as with logout tokens (not this one:
        // its earlier time stays the floor).
        if ended.len() >= LOGOUT_TOKENS_MOST
            && !ended.contains_key(&key)
            && let Some(soonest) = ended
                .iter()
                .min_by_key(|(_, (kept_until, _))| *kept_until)
                .map(|(soonest, _)| soonest.clone())
        {
            ended.remove(&soonest);
        }
        let at = ended.get(&key).map_or(at, |(_, earlier)| at.max(*earlier));
        ended.insert(key, (until, at));
    }

    /// When the provider ended the provider session `key`, as remembered at `now`.
    pub fn provider_session_ended(&self, key: &str, now: UnixTime) -> Option<UnixTime> {
        self.ended_provider_sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .filter(|(until, _)| now < *until)
            .map(|(_, at)| *at)
    }

    /// Takes over the used logout tokens `previous` holds (a reload that names another state
    /// file opens another store).
    pub fn remember_logout_tokens_of(&self, previous: &Self) {
        let taken = previous
            .logout_tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if taken.is_empty() {
            return;
        }
        self.logout_tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(taken);
        self.mark_changed();
    }

    /// Calls `visit` with every session's id, facts and last use.
    pub fn visit(&self, mut visit: impl FnMut(&str, &SessionFacts<'_>, UnixTime)) {
        if let Ok(sessions) = self.sessions.read() {
            for (id, entry) in sessions.iter() {
                visit(id, &entry.compact.facts(), entry.last_seen);
            }
        }
    }

    /// How many sessions are held.
    pub fn len(&self) -> usize {
        self.sessions
            .read()
            .map(|sessions| sessions.len())
            .unwrap_or(0)
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the state file now if anything changed since the last write.
    ///
    /// # Errors
    /// When the file cannot be written; the previous file is then untouched.
    pub fn flush(&self) -> Result<(), StateFileError> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        // A write that panicked left no lock worth keeping: the file is written whole or not.
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        // Every change counted so far was made before it was counted: the sessions read
        // next hold them all.
        let changes = self.changes.load(Ordering::SeqCst);
        // Under the lock only the entries are taken (a reference count each): expanding them
        // all there would hold every login, logout and touch up meanwhile.
        let snapshot: Vec<(String, Entry)> = self
            .sessions
            .read()
            .map(|sessions| {
                sessions
                    .iter()
                    .map(|(id, entry)| (id.clone(), entry.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let sessions: HashMap<String, StoredSession> = snapshot
            .into_iter()
            .filter_map(|(id, entry)| Some((id, entry.expand()?)))
            .collect();
        let logout_tokens = self
            .logout_tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let result = seal_state(&self.sealer.load(), &sessions, &logout_tokens)
            .map_err(|message| StateFileError {
                path: path.display().to_string(),
                message,
            })
            .and_then(|snapshot| write_atomically(path, &snapshot));
        if result.is_err() {
            self.dirty.store(true, Ordering::SeqCst);
        }
        let ok = result.is_ok();
        self.written.send_modify(|written| {
            *written = Written {
                attempt: written.attempt + 1,
                changes,
                ok,
            };
        });
        result
    }

    /// Waits until the state file holds every change made so far (an ended session, so that
    /// a restart does not bring it back): at once without a state file.
    ///
    /// # Errors
    /// When the file could not be written, or no write came within [`DURABLE_WAIT`].
    pub async fn durable(&self) -> Result<(), StateFileError> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let failed = |message: &str| StateFileError {
            path: path.display().to_string(),
            message: message.to_owned(),
        };
        let mut written = self.written.subscribe();
        let since = *written.borrow_and_update();
        let wanted = self.changes.load(Ordering::SeqCst);
        if since.ok && since.changes >= wanted {
            return Ok(());
        }
        // A write that failed waits for the next change: this asks for one.
        self.changed.notify_one();
        let outcome = tokio::time::timeout(
            DURABLE_WAIT,
            written
                .wait_for(|written| written.attempt > since.attempt && written.changes >= wanted),
        )
        .await;
        match outcome {
            Ok(Ok(written)) if written.ok => Ok(()),
            Ok(_) => Err(failed("not written")),
            Err(_) => Err(failed("not written in time")),
        }
    }

    /// Writes the state file after changes, at most about once a second, until the process
    /// ends. Call once, from a spawned task. Each write runs on a blocking thread: expanding,
    /// sealing and syncing every session takes a runtime worker away from requests for as long.
    pub async fn write_behind(self: Arc<Self>) {
        if self.state_file.is_none() {
            return;
        }
        loop {
            self.changed.notified().await;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let store = self.clone();
            let written = tokio::task::spawn_blocking(move || store.flush()).await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, "cannot write the session state file; will retry on the next change");
                }
                Err(error) => {
                    tracing::error!(%error, "the session state file's write failed; will retry on the next change");
                    self.dirty.store(true, Ordering::SeqCst);
                    // Those waiting for it hear of the failure now, not at their time limit.
                    let changes = self.changes.load(Ordering::SeqCst);
                    self.written.send_modify(|written| {
                        *written = Written {
                            attempt: written.attempt + 1,
                            changes,
                            ok: false,
                        };
                    });
                }
            }
        }
    }
}

/// The state file holding `sessions` and `logout_tokens`, sealed by `sealer`.
fn seal_state(
    sealer: &Sealer,
    sessions: &HashMap<String, StoredSession>,
    logout_tokens: &HashMap<String, UnixTime>,
) -> Result<StateFile, String> {
    let seal = |purpose: &str, json: Vec<u8>| {
        sealer
            .seal(purpose, &json)
            .map_err(|_| "no session secret to seal with".to_owned())
    };
    let json = serde_json::to_vec(sessions).map_err(|error| error.to_string())?;
    let sealed = seal(STATE_FILE_PURPOSE, json)?;
    let logout_tokens = if logout_tokens.is_empty() {
        None
    } else {
        let json = serde_json::to_vec(logout_tokens).map_err(|error| error.to_string())?;
        Some(seal(LOGOUT_TOKENS_PURPOSE, json)?)
    };
    Ok(StateFile {
        version: 2,
        sealed,
        logout_tokens,
    })
}

/// The sessions and used logout tokens a state file holds, and whether it held them in clear
/// (an older Tollgate's, which kept no logout tokens).
fn open_state(sealer: &Sealer, bytes: &[u8]) -> Option<Opened> {
    if let Ok(state) = serde_json::from_slice::<StateFile>(bytes) {
        if state.version != 2 {
            return None;
        }
        let json = sealer.open(STATE_FILE_PURPOSE, &state.sealed).ok()?;
        let logout_tokens = match &state.logout_tokens {
            Some(sealed) => {
                serde_json::from_slice(&sealer.open(LOGOUT_TOKENS_PURPOSE, sealed).ok()?).ok()?
            }
            None => HashMap::new(),
        };
        return Some(Opened {
            sessions: serde_json::from_slice(&json).ok()?,
            logout_tokens,
            in_clear: false,
        });
    }
    let state = serde_json::from_slice::<ClearStateFile>(bytes).ok()?;
    (state.version == 1).then(|| Opened {
        sessions: state.sessions,
        logout_tokens: HashMap::new(),
        in_clear: true,
    })
}

/// The sessions and used logout tokens of the state file at `path` that have not ended by
/// `now`.
fn read_state(path: &Path, sealer: &Sealer, now: UnixTime) -> Restored {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Restored::default();
        }
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "cannot read the session state file; starting empty");
            return Restored::default();
        }
    };
    match open_state(sealer, &bytes) {
        Some(Opened {
            sessions,
            logout_tokens,
            in_clear,
        }) => {
            let sessions: HashMap<String, Entry> = sessions
                .into_iter()
                .filter(|(_, stored)| stored.session.expires_at > now)
                .map(|(id, stored)| (id, Entry::new(&stored.session, stored.last_seen)))
                .collect();
            let logout_tokens: HashMap<String, UnixTime> = logout_tokens
                .into_iter()
                .filter(|(_, until)| now < *until)
                .collect();
            tracing::info!(path = %path.display(), sessions = sessions.len(), logout_tokens = logout_tokens.len(), in_clear, "restored sessions");
            Restored {
                sessions,
                logout_tokens,
                in_clear,
            }
        }
        None => {
            let aside = path.with_extension(format!("unreadable-{now}"));
            let moved = std::fs::rename(path, &aside);
            tracing::error!(path = %path.display(), aside = %aside.display(), moved = moved.is_ok(), "the session state file is not readable (damaged, or sealed with a secret no longer listed); moved aside, starting empty");
            Restored::default()
        }
    }
}

fn write_atomically(path: &Path, snapshot: &StateFile) -> Result<(), StateFileError> {
    use std::io::Write as _;
    let fail = |message: String| StateFileError {
        path: path.display().to_string(),
        message,
    };
    let bytes = serde_json::to_vec(snapshot).map_err(|error| fail(error.to_string()))?;
    let directory = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temporary = directory.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("sessions"),
        std::process::id()
    ));
    // Created anew: a file or a link left at the name (a crashed write, or someone with
    // access to the directory) is removed, never written through.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = match options.open(&temporary) {
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&temporary).map_err(|error| fail(error.to_string()))?;
            options.open(&temporary)
        }
        opened => opened,
    }
    .map_err(|error| fail(error.to_string()))?;
    file.write_all(&bytes)
        .map_err(|error| fail(error.to_string()))?;
    file.sync_all().map_err(|error| fail(error.to_string()))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(|error| fail(error.to_string()))?;
    if let Ok(directory) = std::fs::File::open(directory) {
        let _ = directory.sync_all();
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::mpsc;

    const SECRET: &str = "state-file-secret-state-file-secret-0";
    const NEXT: &str = "state-file-secret-state-file-secret-1";

    fn sealer(lines: &[&str]) -> Sealer {
        Sealer::new(
            &lines
                .iter()
                .map(|line| crate::secret::Secret::new((*line).to_owned()))
                .collect::<Vec<_>>(),
        )
    }

    /// A state file path in a directory of its own.
    pub(crate) fn state_path(name: &str) -> PathBuf {
        let directory = std::env::temp_dir().join(format!(
            "tollgate-state-{name}-{}-{}",
            std::process::id(),
            crate::random::token()
        ));
        std::fs::create_dir_all(&directory).unwrap();
        directory.join("sessions")
    }

    #[test]
    fn the_state_file_holds_no_session_id_or_token_in_clear() {
        let path = state_path("sealed");
        let store = MemoryStore::open(Some(path.clone()), sealer(&[SECRET]), 10);
        store.insert(
            "id-in-the-cookie".to_owned(),
            session("alice", "access-token-of-alice"),
            20,
        );
        store.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        for secret in [
            "id-in-the-cookie",
            "access-token-of-alice",
            "alice",
            "eyJhbGci",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        // A rotation that still lists the secret opens it; the next write seals with the new one.
        let rotated = MemoryStore::open(Some(path.clone()), sealer(&[NEXT, SECRET]), 30);
        assert_eq!(
            rotated
                .get("id-in-the-cookie")
                .and_then(|stored| stored.session.access_token.clone()),
            Some("access-token-of-alice".to_owned())
        );
        rotated.seal_with(sealer(&[NEXT]));
        rotated.flush().unwrap();
        let reopened = MemoryStore::open(Some(path.clone()), sealer(&[NEXT]), 30);
        assert!(reopened.get("id-in-the-cookie").is_some());
    }

    /// An end waits for the write that holds it; with nothing changed since the file was read
    /// there is nothing to wait for (a logout of a session this process does not hold: it waited
    /// 5 s for a write that never came, then failed); a write that does not come is a failure.
    #[tokio::test(start_paused = true)]
    async fn durable_waits_for_the_write_that_holds_every_change() {
        let path = state_path("durable");
        let store = Arc::new(MemoryStore::open(Some(path.clone()), sealer(&[SECRET]), 10));
        store
            .durable()
            .await
            .expect("nothing changed: nothing to wait for");
        store.insert("a".to_owned(), session("alice", "t"), 20);
        assert!(store.durable().await.is_err(), "no write came");
        let writer = store.clone();
        let write_behind = tokio::spawn(async move { writer.write_behind().await });
        store.remove("a");
        store.durable().await.expect("the write-behind wrote it");
        let reopened = MemoryStore::open(Some(path), sealer(&[SECRET]), 30);
        assert!(reopened.get("a").is_none(), "the file holds the end");
        store.durable().await.expect("written already");
        write_behind.abort();
    }

    /// The write-behind writes on a blocking thread: while its write waits (here for the file,
    /// which another write holds) the runtime's thread serves its other tasks. On one thread,
    /// as `#[tokio::test]` runs, a write on the runtime held this test's task up until the
    /// holder gave up.
    #[tokio::test]
    async fn a_state_file_write_holds_no_runtime_thread_up() {
        let path = state_path("off-runtime");
        let store = Arc::new(MemoryStore::open(Some(path), sealer(&[SECRET]), 10));
        let (release, released) = mpsc::channel::<()>();
        let (held_sender, held) = mpsc::channel();
        let holder = {
            let store = store.clone();
            std::thread::spawn(move || {
                let _writing = store.writing.lock().unwrap();
                held_sender.send(()).unwrap();
                // Released by this test's task, or given up.
                released
                    .recv_timeout(std::time::Duration::from_secs(10))
                    .is_ok()
            })
        };
        held.recv().unwrap();
        let writer = store.clone();
        let write_behind = tokio::spawn(async move { writer.write_behind().await });
        store.insert("a".to_owned(), session("alice", "t"), 20);
        // The write begins a second after the change (its blocking task then holds the store
        // too: this test, the holder, the write-behind and the write), and waits for the file.
        for _ in 0..3000 {
            if Arc::strong_count(&store) == 4 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(Arc::strong_count(&store), 4, "a write is under way");
        let _ = release.send(());
        assert!(
            holder.join().unwrap(),
            "this task ran while the write waited"
        );
        store
            .durable()
            .await
            .expect("written once the file was free");
        write_behind.abort();
    }

    #[test]
    fn a_state_file_in_clear_is_read_and_sealed_at_the_next_write() {
        let path = state_path("clear");
        let clear = serde_json::json!({"version": 1, "sessions": {
            "old-id": StoredSession { session: session("bob", "access-token-of-bob"), last_seen: 20 },
        }});
        std::fs::write(&path, clear.to_string()).unwrap();
        let store = MemoryStore::open(Some(path.clone()), sealer(&[SECRET]), 30);
        assert!(
            store.get("old-id").is_some(),
            "an older Tollgate's sessions are kept"
        );
        store.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("access-token-of-bob") && !text.contains("old-id"),
            "{text}"
        );
    }

    #[test]
    fn a_state_file_no_listed_secret_opens_is_moved_aside() {
        let path = state_path("rotated-out");
        let store = MemoryStore::open(Some(path.clone()), sealer(&[SECRET]), 10);
        store.insert("a".to_owned(), session("alice", "t"), 20);
        store.flush().unwrap();
        let other = MemoryStore::open(Some(path.clone()), sealer(&[NEXT]), 30);
        assert!(other.is_empty());
        let aside = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(Result::ok)
            .any(|entry| entry.file_name().to_string_lossy().contains("unreadable"));
        assert!(aside, "kept beside for the operator");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_at_the_temporary_name_is_not_written_through() {
        let path = state_path("link");
        let target = path.with_file_name("elsewhere");
        std::fs::write(&target, "untouched").unwrap();
        let temporary = path.with_file_name(format!(".sessions.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&target, &temporary).unwrap();
        let store = MemoryStore::open(Some(path.clone()), sealer(&[SECRET]), 10);
        store.insert("a".to_owned(), session("alice", "t"), 20);
        store.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert!(
            MemoryStore::open(Some(path), sealer(&[SECRET]), 30)
                .get("a")
                .is_some()
        );
    }

    /// Flushes on several threads at once (the write-behind task and a shutdown, or two
    /// reloads) share one temporary name: each is taken in turn, so none removes another's
    /// file before its rename, and the last one written holds every session.
    #[test]
    fn flushes_on_several_threads_each_succeed_and_lose_nothing() {
        let path = state_path("threads");
        let store = Arc::new(MemoryStore::open(Some(path.clone()), sealer(&[SECRET]), 10));
        let threads = 4;
        let rounds = 40;
        let start = Arc::new(std::sync::Barrier::new(threads));
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let store = store.clone();
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    (0..rounds)
                        .filter(|round| {
                            let id = format!("{thread}-{round}");
                            let user = format!("user-{thread}-{round}");
                            store.insert(id, session(&user, "t"), 20);
                            store.flush().is_err()
                        })
                        .count()
                })
            })
            .collect();
        let failed: usize = workers
            .into_iter()
            .map(|worker| worker.join().unwrap())
            .sum();
        assert_eq!(failed, 0, "flushes that failed");
        let reopened = MemoryStore::open(Some(path), sealer(&[SECRET]), 30);
        assert_eq!(reopened.len(), threads * rounds);
    }

    fn session(sub: &str, access: &str) -> Arc<Session> {
        let claims = serde_json::json!({"sub": sub, "sid": format!("sid-{sub}")});
        Arc::new(Session {
            provider: "corp".to_owned(),
            claims: Arc::new(claims.as_object().cloned().unwrap_or_default()),
            id_token: "eyJhbGciOiJub25lIn0.e30.c2ln".to_owned(),
            access_token: Some(access.to_owned()),
            refresh_token: None,
            access_expires_at: None,
            created_at: 10,
            expires_at: 1000,
        })
    }

    #[test]
    fn a_users_oldest_sessions_end_beyond_the_limit_and_no_one_elses() {
        let store = MemoryStore::open(None, sealer(&[SECRET]), 10);
        let sign_in = |id: &str, session: Arc<Session>| {
            store.insert(id.to_owned(), session, 10);
            store.end_beyond_the_users_limit(id)
        };
        sign_in("bob", session("bob", "t"));
        let mut elsewhere = (*session("alice", "t")).clone();
        elsewhere.provider = "other".to_owned();
        sign_in("elsewhere-alice", Arc::new(elsewhere));
        for n in 0..MAX_SESSIONS_PER_USER {
            assert_eq!(sign_in(&format!("alice-{n}"), session("alice", "t")), 0);
        }
        assert_eq!(sign_in("alice-new", session("alice", "t")), 1);
        assert!(store.get("alice-0").is_none(), "the oldest ended");
        for kept in ["alice-1", "alice-new", "bob", "elsewhere-alice"] {
            assert!(store.get(kept).is_some(), "{kept}");
        }
        // One ended meanwhile is not counted; one stored again is listed once.
        store.remove("alice-1");
        assert_eq!(sign_in("alice-again", session("alice", "t")), 0);
        assert_eq!(sign_in("alice-again", session("alice", "t")), 0);
        assert_eq!(sign_in("alice-more", session("alice", "t")), 1);
        assert!(store.get("alice-2").is_none());
        // The sweep leaves no ended session's id in the users' lists.
        store.remove_where(|id, _, _| id.starts_with("alice-"));
        assert_eq!(
            store.users.lock().unwrap().len(),
            2,
            "bob and alice elsewhere"
        );
    }

    #[test]
    fn a_restored_store_knows_its_users_sessions_oldest_first() {
        let path = state_path("users");
        let store = MemoryStore::open(Some(path.clone()), sealer(&[SECRET]), 10);
        // Signed in in turn, kept in a map: the file holds no order but their `created_at`.
        for n in (0..MAX_SESSIONS_PER_USER).rev() {
            let mut signed_in = (*session("alice", "t")).clone();
            signed_in.created_at = 10 + i64::try_from(n).unwrap();
            store.insert(format!("alice-{n}"), Arc::new(signed_in), 10);
        }
        store.flush().unwrap();
        let reopened = MemoryStore::open(Some(path), sealer(&[SECRET]), 200);
        let mut newest = (*session("alice", "t")).clone();
        newest.created_at = 200;
        reopened.insert("alice-new".to_owned(), Arc::new(newest), 200);
        assert_eq!(reopened.end_beyond_the_users_limit("alice-new"), 1);
        assert!(reopened.get("alice-0").is_none(), "the oldest ended");
        assert!(reopened.get("alice-1").is_some());
    }

    fn access(store: &MemoryStore, id: &str) -> Option<String> {
        store.get(id)?.session.access_token.clone()
    }

    #[test]
    fn the_expanded_copy_follows_every_change() {
        let store = MemoryStore::open(None, sealer(&[SECRET]), 10);
        store.insert("a".to_owned(), session("u1", "first"), 10);
        assert_eq!(access(&store, "a").as_deref(), Some("first"));
        store.insert("a".to_owned(), session("u1", "refreshed"), 20);
        assert_eq!(access(&store, "a").as_deref(), Some("refreshed"));
        // Beyond the expanded copies: read back from the compact entry.
        for index in 0..EXPANDED + 10 {
            store.insert(format!("other-{index}"), session("u2", "x"), 10);
        }
        assert_eq!(access(&store, "a").as_deref(), Some("refreshed"));
        store.touch("a", 30);
        assert_eq!(store.get("a").map(|stored| stored.last_seen), Some(30));
        assert!(store.remove("a"));
        assert!(store.get("a").is_none());
        assert!(!store.remove("a"));
    }

    #[test]
    fn a_refresh_is_stored_only_over_the_session_that_spent_its_token() {
        let with_refresh = |access: &str, refresh: &str| {
            let mut session = (*session("u1", access)).clone();
            session.refresh_token = Some(refresh.to_owned());
            Arc::new(session)
        };
        let store = MemoryStore::open(None, sealer(&[SECRET]), 10);
        store.insert("a".to_owned(), with_refresh("first", "r1"), 10);
        let first = with_refresh("first", "r1");
        assert!(
            store
                .replace_refreshed("a", &first, with_refresh("second", "r2"), 20)
                .is_ok()
        );
        assert_eq!(access(&store, "a").as_deref(), Some("second"));
        // A late refresh of the spent token finds the session that replaced it.
        let superseded = store.replace_refreshed("a", &first, with_refresh("late", "r3"), 30);
        assert_eq!(
            superseded.map_err(|current| current.and_then(|s| s.access_token.clone())),
            Err(Some("second".to_owned()))
        );
        // Ended meanwhile (a logout): the refresh does not bring it back.
        assert!(store.remove("a"));
        assert!(matches!(
            store.replace_refreshed(
                "a",
                &with_refresh("second", "r2"),
                with_refresh("third", "r4"),
                40
            ),
            Err(None)
        ));
        assert!(store.get("a").is_none());
        // A provider that does not rotate sends the same refresh token back: only the access
        // token tells a newer refresh's result, which a result from the older one never
        // overwrites (its claims would come back).
        store.insert("b".to_owned(), with_refresh("one", "same"), 10);
        let one = with_refresh("one", "same");
        assert!(
            store
                .replace_refreshed("b", &one, with_refresh("two", "same"), 20)
                .is_ok()
        );
        let older = store.replace_refreshed("b", &one, with_refresh("stale", "same"), 30);
        assert_eq!(
            older.map_err(|current| current.and_then(|s| s.access_token.clone())),
            Err(Some("two".to_owned()))
        );
    }

    #[test]
    fn selection_sees_provider_sub_and_sid_without_expanding() {
        let store = MemoryStore::open(None, sealer(&[SECRET]), 10);
        store.insert("a".to_owned(), session("u1", "t"), 10);
        store.insert("b".to_owned(), session("u2", "t"), 50);
        let removed = store.remove_where(|_, facts, last_seen| {
            facts.provider == "corp" && facts.sid == Some("sid-u1") && last_seen == 10
        });
        assert_eq!(removed, 1);
        assert!(store.get("a").is_none());
        let mut seen = Vec::new();
        store.visit(|id, facts, _| seen.push((id.to_owned(), facts.sub.to_owned())));
        assert_eq!(seen, [("b".to_owned(), "u2".to_owned())]);
    }

    /// Another thread, kept alive between reads so that its copies last: reads `id` from
    /// `store` when called.
    fn reader(store: &Arc<MemoryStore>) -> impl Fn(&str) -> Option<StoredSession> + use<> {
        let (ask, asked) = mpsc::channel::<String>();
        let (answer, answers) = mpsc::channel();
        let store = store.clone();
        std::thread::spawn(move || {
            for id in asked {
                let _ = answer.send(store.get(&id));
            }
        });
        move |id| {
            ask.send(id.to_owned()).ok()?;
            answers.recv().ok()?
        }
    }

    #[test]
    fn a_session_removed_on_one_thread_is_not_served_from_anothers_copy() {
        let store = Arc::new(MemoryStore::open(None, sealer(&[SECRET]), 10));
        store.insert("a".to_owned(), session("u1", "t"), 10);
        store.insert("b".to_owned(), session("u2", "t"), 10);
        let read = reader(&store);
        assert!(read("a").is_some());
        assert!(read("a").is_some());
        assert!(store.remove("a"));
        assert!(read("a").is_none());
        // Ended by selection too (admin delete, back-channel logout, expiry).
        assert!(read("b").is_some());
        assert_eq!(store.remove_where(|id, _, _| id == "b"), 1);
        assert!(read("b").is_none());
    }

    #[test]
    fn a_session_replaced_on_one_thread_is_read_anew_on_another() {
        let store = Arc::new(MemoryStore::open(None, sealer(&[SECRET]), 10));
        store.insert("a".to_owned(), session("u1", "first"), 10);
        let read = reader(&store);
        let access = |id| read(id).and_then(|stored| stored.session.access_token.clone());
        assert_eq!(access("a").as_deref(), Some("first"));
        assert_eq!(access("a").as_deref(), Some("first"));
        store.insert("a".to_owned(), session("u1", "refreshed"), 20);
        assert_eq!(access("a").as_deref(), Some("refreshed"));
    }

    #[test]
    fn a_touch_on_one_thread_is_seen_on_another() {
        let store = Arc::new(MemoryStore::open(None, sealer(&[SECRET]), 10));
        store.insert("a".to_owned(), session("u1", "t"), 10);
        let read = reader(&store);
        let last_seen = |id| read(id).map(|stored| stored.last_seen);
        assert_eq!(last_seen("a"), Some(10));
        assert_eq!(last_seen("a"), Some(10));
        store.touch("a", 30);
        assert_eq!(last_seen("a"), Some(30));
    }

    #[test]
    fn one_threads_copies_of_one_store_are_never_served_for_another() {
        let first = Arc::new(MemoryStore::open(None, sealer(&[SECRET]), 10));
        let second = MemoryStore::open(None, sealer(&[SECRET]), 10);
        first.insert("a".to_owned(), session("u1", "first"), 10);
        second.insert("a".to_owned(), session("u1", "second"), 10);
        // Both stores are at their first generation now.
        assert_eq!(access(&first, "a").as_deref(), Some("first"));
        assert_eq!(access(&second, "a").as_deref(), Some("second"));
        assert_eq!(access(&first, "a").as_deref(), Some("first"));
    }

    #[test]
    fn a_hit_hands_out_the_copy_this_thread_kept() {
        let store = Arc::new(MemoryStore::open(None, sealer(&[SECRET]), 10));
        store.insert("a".to_owned(), session("u1", "t"), 10);
        let first = store.get("a").map(|stored| stored.session);
        // Another thread's read changes nothing: it is not a change of the sessions.
        assert!(reader(&store)("a").is_some());
        // Without the thread's copy, the next read would expand the session anew.
        store.expanded.remove("a");
        let again = store.get("a").map(|stored| stored.session);
        assert!(
            matches!((first, again), (Some(first), Some(again)) if Arc::ptr_eq(&first, &again))
        );
    }

    #[test]
    fn a_copy_is_the_stored_session_and_its_last_use() {
        let store = MemoryStore::open(None, sealer(&[SECRET]), 10);
        let stored = session("u1", "t");
        store.insert("a".to_owned(), stored.clone(), 10);
        store.touch("a", 25);
        let expected = serde_json::to_value(StoredSession {
            session: stored,
            last_seen: 25,
        })
        .ok();
        let read = || serde_json::to_value(store.get("a")).ok();
        // Made from the shared map, then served from this thread's copies.
        assert_eq!(read(), expected);
        assert_eq!(read(), expected);
    }

    #[test]
    fn a_change_that_panics_midway_leaves_no_copy_in_use() {
        let store = Arc::new(MemoryStore::open(None, sealer(&[SECRET]), 10));
        store.insert("a".to_owned(), session("u1", "t"), 10);
        let read = reader(&store);
        assert!(read("a").is_some());
        let writer = store.clone();
        let panicked = std::thread::spawn(move || {
            let _sessions = writer.write();
            panic!("a change fails midway");
        })
        .join();
        assert!(panicked.is_err());
        assert!(read("a").is_none());
        assert!(store.get("a").is_none());
    }
}
