//! `store = "memory"`: sessions in this process, optionally kept in `state_file` so they
//! survive a restart. The file is rewritten whole, at most about once a second after a change
//! and at shutdown: written to a temporary file in the same directory, synced, then renamed
//! over the old one, so a crash mid-write leaves the previous file intact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use super::Session;
use crate::clock::UnixTime;

/// A session with the time it was last used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSession {
    /// The session.
    pub session: std::sync::Arc<Session>,
    /// Last request that used it.
    pub last_seen: UnixTime,
}

/// Sessions kept in memory.
pub struct MemoryStore {
    sessions: RwLock<HashMap<String, StoredSession>>,
    state_file: Option<PathBuf>,
    dirty: AtomicBool,
    changed: tokio::sync::Notify,
}

/// The state file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {message}")]
pub struct StateFileError {
    path: String,
    message: String,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    sessions: HashMap<String, StoredSession>,
}

impl MemoryStore {
    /// A store, loaded from `state_file` when it exists. A file that cannot be read as a state
    /// file is moved aside (`<name>.unreadable-<time>`) with an error log, never silently
    /// dropped, and the store starts empty.
    pub fn open(state_file: Option<PathBuf>, now: UnixTime) -> Self {
        let sessions = state_file
            .as_deref()
            .map(|path| read_state(path, now))
            .unwrap_or_default();
        Self {
            sessions: RwLock::new(sessions),
            state_file,
            dirty: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn mark_changed(&self) {
        if self.state_file.is_some() {
            self.dirty.store(true, Ordering::SeqCst);
            self.changed.notify_one();
        }
    }

    /// The session `id`, if present.
    pub fn get(&self, id: &str) -> Option<StoredSession> {
        self.sessions.read().ok()?.get(id).cloned()
    }

    /// Records that the session was used at `now`.
    pub fn touch(&self, id: &str, now: UnixTime) {
        if let Ok(mut sessions) = self.sessions.write()
            && let Some(stored) = sessions.get_mut(id)
        {
            stored.last_seen = now;
        }
        self.mark_changed();
    }

    /// Stores a session under `id`.
    pub fn insert(&self, id: String, session: std::sync::Arc<Session>, now: UnixTime) {
        if let Ok(mut sessions) = self.sessions.write() {
            sessions.insert(
                id,
                StoredSession {
                    session,
                    last_seen: now,
                },
            );
        }
        self.mark_changed();
    }

    /// Removes the sessions `matching` selects; returns how many.
    pub fn remove_where(&self, matching: impl Fn(&str, &StoredSession) -> bool) -> usize {
        let removed = match self.sessions.write() {
            Ok(mut sessions) => {
                let before = sessions.len();
                sessions.retain(|id, stored| !matching(id, stored));
                before - sessions.len()
            }
            Err(_) => 0,
        };
        if removed > 0 {
            self.mark_changed();
        }
        removed
    }

    /// A copy of every session with its id.
    pub fn all(&self) -> Vec<(String, StoredSession)> {
        self.sessions
            .read()
            .map(|sessions| {
                sessions
                    .iter()
                    .map(|(id, stored)| (id.clone(), stored.clone()))
                    .collect()
            })
            .unwrap_or_default()
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
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let snapshot = StateFile {
            version: 1,
            sessions: self
                .sessions
                .read()
                .map(|sessions| sessions.clone())
                .unwrap_or_default(),
        };
        let result = write_atomically(path, &snapshot);
        if result.is_err() {
            self.dirty.store(true, Ordering::SeqCst);
        }
        result
    }

    /// Writes the state file after changes, at most about once a second, until the process
    /// ends. Call once, from a spawned task.
    pub async fn write_behind(&self) {
        if self.state_file.is_none() {
            return;
        }
        loop {
            self.changed.notified().await;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if let Err(error) = self.flush() {
                tracing::error!(%error, "cannot write the session state file; will retry on the next change");
            }
        }
    }
}

fn read_state(path: &Path, now: UnixTime) -> HashMap<String, StoredSession> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "cannot read the session state file; starting empty");
            return HashMap::new();
        }
    };
    match serde_json::from_slice::<StateFile>(&bytes) {
        Ok(state) if state.version == 1 => {
            let mut sessions = state.sessions;
            sessions.retain(|_, stored| stored.session.expires_at > now);
            tracing::info!(path = %path.display(), sessions = sessions.len(), "restored sessions");
            sessions
        }
        _ => {
            let aside = path.with_extension(format!("unreadable-{now}"));
            let moved = std::fs::rename(path, &aside);
            tracing::error!(path = %path.display(), aside = %aside.display(), moved = moved.is_ok(), "the session state file is not readable; moved aside, starting empty");
            HashMap::new()
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
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(&temporary)
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
