//! Sessions and login state kept in sealed cookies (`session.store = "cookie"`), split over
//! several cookies when large. A copied cookie stays valid until it expires, even after logout;
//! server-side stores come with the reverse proxy.

pub mod compact;
pub mod error;
pub mod lifetime;
pub mod memory_store;
mod record;
pub mod redis_cache;
pub mod redis_store;
pub mod seal;
pub mod store;

use crate::clock::UnixTime;
use seal::Sealer;

/// Largest value of one cookie; browsers keep at least 4096 bytes per cookie with its name.
const CHUNK_SIZE: usize = 3800;
/// At most this many chunks are read; more means a hostile or broken request.
const MAX_CHUNKS: usize = 8;
/// Logins in flight (state cookies) kept per browser.
pub const MAX_LOGINS_IN_FLIGHT: usize = 5;
/// Bytes of login-state cookies (names and values) kept per browser, the newest login's
/// included: a few large ones (long return URLs, a federated client's long `state`), which a
/// page could make a browser collect by navigating it, must not push the `Cookie` header past
/// a proxy's limit (nginx: 8 KB per header), which would refuse every request of that browser
/// until they expire, the session cookie beside them included (a chunk of the `cookie` store
/// holds up to 3.8 KB). A login's own cookie is at most about 3.5 KB; an ordinary one, with a
/// short return URL, about 400 bytes, so five of those fit.
pub const LOGIN_COOKIES_BUDGET: usize = 4096;
/// How long a login may take.
pub const LOGIN_STATE_LIFETIME: i64 = 600;

/// How far ahead of this one another replica's clock may be, in seconds, for what it made:
/// a login state from further in the future is not taken.
const CLOCKS_APART: i64 = 60;

/// The most sessions one user (a provider's `sub`) holds at once in the memory or Redis store:
/// a sign-in beyond it ends that user's oldest. A person has a few browsers; one account
/// signing in again and again (silent SSO in a loop) would otherwise fill the process's memory,
/// or Redis.
pub const MAX_SESSIONS_PER_USER: usize = 100;

pub use crate::http::cookies::{Cookies, request_cookies};
pub use record::{FederatedRequest, LoginState, Session, StoredSession};

/// Attributes shared by every cookie Tollgate sets.
#[derive(Debug, Clone, Copy)]
pub struct CookieAttributes {
    /// `Secure`, dropped only for plain-http loopback.
    pub secure: bool,
    /// Whether the session cookie goes with its `__Host-` binding: written with one, and read
    /// only with one ([`CookieJar::is_bound`]). Over https.
    pub bound: bool,
}

impl CookieAttributes {
    /// The attributes for a request served at `base`: `Secure` unless plain http on loopback.
    pub fn for_base(base: &url::Url) -> Self {
        let loopback = match base.host() {
            Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(address)) => address.is_loopback(),
            Some(url::Host::Ipv6(address)) => address.is_loopback(),
            None => false,
        };
        let secure = !(base.scheme() == "http" && loopback);
        Self {
            secure,
            bound: secure,
        }
    }

    /// For a request whose URL is not known (an `/auth` told neither its URL nor `public_url`,
    /// a `/userinfo` without a `Host`):
    /// `Secure`, and no binding either way, since the session cookie may have been set over
    /// plain http on loopback. A session refreshed there keeps a binding only when the browser
    /// sent a matching one (`identity::written_with`), so a cookie another host planted never
    /// becomes a bound one.
    pub const UNKNOWN_BASE: Self = Self {
        secure: true,
        bound: false,
    };
}

fn set_cookie(
    name: &str,
    value: &str,
    max_age: Option<i64>,
    attributes: CookieAttributes,
) -> String {
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if attributes.secure {
        cookie.push_str("; Secure");
    }
    if let Some(max_age) = max_age {
        cookie.push_str(&format!("; Max-Age={}", max_age.max(0)));
    }
    cookie
}

fn delete_cookie(name: &str, attributes: CookieAttributes) -> String {
    set_cookie(name, "", Some(0), attributes)
}

/// The most the opened sessions kept by their cookie weigh ([`OpenedWeight`]): room for some
/// ten thousand ordinary ones (a few KB of cookie each), while cookies minted to fill it (each
/// refresh's copy of a cookie session is another valid value, up to 8 chunks of 3 800 bytes)
/// hold at most this much, not ten thousand of the largest.
const OPENED_WEIGHT_MOST: u64 = 128 << 20;

/// What an opened session holds, in bytes, about: its sealed value as the key, and the
/// session it opens to, some four times the sealed size once its claims are parsed (a map of
/// many short values, groups, costs several times their JSON).
#[derive(Clone, Copy)]
struct OpenedWeight;

impl quick_cache::Weighter<Box<str>, std::sync::Arc<Session>> for OpenedWeight {
    fn weight(&self, sealed: &Box<str>, _: &std::sync::Arc<Session>) -> u64 {
        u64::try_from(sealed.len().saturating_mul(5)).unwrap_or(u64::MAX)
    }
}

/// Reads, writes and clears session and login-state cookies.
pub struct CookieJar {
    sealer: Sealer,
    cookie_name: String,
    opened: quick_cache::sync::Cache<Box<str>, std::sync::Arc<Session>, OpenedWeight>,
    /// Opened session-id cookies, by sealed value.
    opened_ids: quick_cache::sync::Cache<Box<str>, std::sync::Arc<str>>,
    /// Names this jar in threads' `thread_front` entries.
    id: u64,
    /// `__Host-<name>_bind`, the cookie binding the session cookie to this browser over https
    /// ([`CookieJar::is_bound`]); `None` when `cookie_name` is itself a `__Host-` cookie.
    binding_name: Option<String>,
    /// `session.lifetime` now, in seconds: a session ends this long after its login even when
    /// it was made under a longer one (a reload that shortens it ends the older sessions).
    lifetime: i64,
}

/// The length of a binding: the start of the sealed value, its version, key id and random
/// nonce (17 bytes) and one byte of ciphertext, 18 bytes in base64url; never the same for two
/// seals.
const BINDING_LEN: usize = 24;

/// The most values of the session cookie a sign-out ends: the browser's own (wherever it was
/// sent), and the first few others, which other hosts of the site set.
const SESSION_VALUES_MOST: usize = 4;

/// The binding of a session cookie's value (`<count>.<sealed>` or `s.<sealed>`): the first
/// [`BINDING_LEN`] characters of the sealed value. Not a secret: what makes it hold is that no
/// other host can set the `__Host-` cookie carrying it.
fn binding_of(value: &str) -> Option<&str> {
    value.split_once('.')?.1.get(..BINDING_LEN)
}

thread_local! {
    static OPENED_SESSION: crate::thread_front::Slot<Session> = const { std::cell::RefCell::new(None) };
    static OPENED_ID: crate::thread_front::Slot<str> = const { std::cell::RefCell::new(None) };
}

/// A session cookie that was present but could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionCookieError {
    /// Tampered, truncated, sealed with an unknown secret, or not a session.
    #[error("session cookie cannot be opened")]
    Unreadable,
    /// Past its lifetime.
    #[error("session expired")]
    Expired,
    /// Over https, without the `__Host-` cookie that binds it to the browser it was set in:
    /// set by another host of the same site (`Domain=example.com` from `x.example.com`), or
    /// from before 6 December 2026.
    #[error("session cookie not bound to this browser (set by another host?)")]
    Unbound,
    /// The session is larger than its store takes (`session::store::SERVER_SIDE_MOST`).
    #[error("session too large to store (the provider's tokens and claims)")]
    TooLarge,
}

impl CookieJar {
    /// A jar sealing with `sealer` under `cookie_name`.
    pub fn new(sealer: Sealer, cookie_name: String) -> Self {
        Self {
            sealer,
            opened: quick_cache::sync::Cache::with_weighter(
                10_000,
                OPENED_WEIGHT_MOST,
                OpenedWeight,
            ),
            opened_ids: quick_cache::sync::Cache::new(10_000),
            id: {
                static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
            binding_name: (!cookie_name.starts_with("__Host-"))
                .then(|| format!("__Host-{cookie_name}_bind")),
            cookie_name,
            lifetime: i64::MAX,
        }
    }

    /// This jar, ending every session `lifetime` after its login at the latest.
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: std::time::Duration) -> Self {
        self.lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        self
    }

    /// When `session` ends: at its `expires_at`, or `session.lifetime` after its login when
    /// that is now sooner.
    pub fn ends_at(&self, session: &Session) -> UnixTime {
        self.end_of(session.expires_at, session.created_at)
    }

    /// [`CookieJar::ends_at`] of a session that expires at `expires_at` and began at
    /// `created_at`.
    pub fn end_of(&self, expires_at: UnixTime, created_at: UnixTime) -> UnixTime {
        expires_at.min(created_at.saturating_add(self.lifetime))
    }

    /// Whether the session cookie in `cookies`, if any, was set in this browser by this host.
    /// Over https a session cookie goes with a `__Host-` cookie holding its binding
    /// ([`binding_of`]), which only this host can set: a sibling subdomain (`x.example.com`, or
    /// XSS there) can set `tollgate` for the whole site with `Domain=example.com`, and would
    /// otherwise sign a visitor in as the attacker (whose own cookie it copied) or, with a
    /// longer `Path`, shadow the visitor's session with it. Asked only over https (plain http
    /// on loopback has no `__Host-` cookie); always true for a `__Host-` `cookie_name`.
    pub fn is_bound(&self, cookies: &Cookies<'_>) -> bool {
        let Some(binding_name) = self.binding_name.as_deref() else {
            return true;
        };
        let Some(value) = cookies.get(self.cookie_name.as_str()) else {
            return true;
        };
        binding_of(value).is_some_and(|binding| cookies.get(binding_name) == Some(&binding))
    }

    /// Whether the request's session cookie was planted by another host (`Domain=example.com`,
    /// a longer `Path`, sent first): it is not bound where cookies are bound (`attributes`),
    /// nor, where the URL is unknown too (taken to be https), to a binding the browser sends
    /// (its own, set over https at sign-in). Not over plain http on loopback, which writes no
    /// binding (a browser keeps one from an earlier sign-in at `https://localhost`).
    pub fn planted(&self, cookies: &Cookies<'_>, attributes: CookieAttributes) -> bool {
        (attributes.bound || (attributes.secure && self.sends_binding(cookies)))
            && !self.is_bound(cookies)
    }

    /// Whether the browser sends a binding: it signed in over https, so a session cookie that
    /// does not match it was planted, wherever the request's URL is unknown.
    pub fn sends_binding(&self, cookies: &Cookies<'_>) -> bool {
        self.binding_name
            .as_deref()
            .is_some_and(|name| cookies.get(name).is_some())
    }

    /// Whether a request sends the session cookie twice: one of them set for the whole site by
    /// another host (`Domain=example.com`), since Tollgate sets one, host-only, at `Path=/`.
    /// Neither can be told to be the browser's own here, and signing in again would not help:
    /// the other host's cookie stays, sent first whenever its `Path` is longer or it is older.
    /// Its chunks too: another host's `tollgate_1` with a longer `Path` is sent before the
    /// browser's own, and its session would never open again.
    /// (A set, not a list: a request may name thousands of distinct chunks, each looked up.)
    pub fn is_sent_twice(&self, headers: &axum::http::HeaderMap) -> bool {
        let mut seen = std::collections::HashSet::new();
        headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|value| crate::http::utf8(value.as_bytes()))
            .flat_map(crate::http::cookies::pairs)
            .filter(|pair| crate::http::cookies::is_session_or_chunk(pair.name, &self.cookie_name))
            .any(|pair| !seen.insert(pair.name))
    }

    /// The request's cookies once for each value of the session cookie it sends (each value
    /// once, at most [`SESSION_VALUES_MOST`]: a request must not buy a store round trip per
    /// repeat), the browser's own first, however many were sent before it: the one its binding
    /// names, else the first sent. A cookie another host set for the whole site at a longer
    /// `Path` (`/signout`) is sent before the browser's own, and read alone it would stand in
    /// for it.
    pub fn each_session_cookie<'a>(&self, headers: &'a axum::http::HeaderMap) -> Vec<Cookies<'a>> {
        let cookies = crate::http::cookies::request_cookies(headers);
        // The value the binding names (any, when there is no binding to name one).
        let binding = self
            .binding_name
            .as_deref()
            .and_then(|name| cookies.get(name).copied());
        let is_own = |value: &str| {
            self.binding_name.is_none()
                || binding.is_some_and(|binding| binding_of(value) == Some(binding))
        };
        // One pass over every value, keeping the own one wherever it was sent and the first
        // few others: a header of thousands of values costs one look at each.
        let mut own: Option<(&str, &str)> = None;
        let mut others: Vec<(&str, &str)> = Vec::new();
        let sent = headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|value| crate::http::utf8(value.as_bytes()))
            .flat_map(crate::http::cookies::pairs)
            .filter(|pair| pair.name == self.cookie_name)
            .filter_map(|pair| Some((pair.name, pair.value?)));
        for value in sent {
            // A value is the own one from its first sight, so it never waits among the others.
            if own.is_none() && is_own(value.1) {
                own = Some(value);
            } else if own != Some(value)
                && others.len() < SESSION_VALUES_MOST
                && !others.contains(&value)
            {
                others.push(value);
            }
        }
        let own = own.or_else(|| (!others.is_empty()).then(|| others.remove(0)));
        let Some(own) = own.filter(|_| !others.is_empty()) else {
            return vec![cookies];
        };
        std::iter::once(own)
            .chain(others.into_iter().take(SESSION_VALUES_MOST - 1))
            .map(|(name, value)| {
                let mut with = cookies.clone();
                with.insert(name, value);
                with
            })
            .collect()
    }

    /// The `Set-Cookie` of the binding of a session cookie's `value`, when `attributes.bound`.
    fn bind(&self, value: &str, max_age: i64, attributes: CookieAttributes) -> Option<String> {
        let name = self.binding_name.as_deref().filter(|_| attributes.bound)?;
        Some(set_cookie(
            name,
            binding_of(value)?,
            Some(max_age),
            attributes,
        ))
    }

    /// The session of this request: `Ok(None)` without a session cookie.
    ///
    /// # Errors
    /// When a session cookie is present but unusable.
    pub fn session(
        &self,
        cookies: &Cookies<'_>,
        now: UnixTime,
    ) -> Result<Option<std::sync::Arc<Session>>, SessionCookieError> {
        let Some(first) = cookies.get(self.cookie_name.as_str()) else {
            return Ok(None);
        };
        let (count, head) = first
            .split_once('.')
            .ok_or(SessionCookieError::Unreadable)?;
        let count: usize = count.parse().map_err(|_| SessionCookieError::Unreadable)?;
        if count == 0 || count > MAX_CHUNKS {
            return Err(SessionCookieError::Unreadable);
        }
        let mut sealed = std::borrow::Cow::Borrowed(head);
        for index in 1..count {
            sealed.to_mut().push_str(
                cookies
                    .get(format!("{}_{index}", self.cookie_name).as_str())
                    .ok_or(SessionCookieError::Unreadable)?,
            );
        }
        // Opened sessions are remembered by their whole sealed value (compared in full), so a
        // busy browser's cookie is decrypted and parsed once, not on every request.
        let session = match crate::thread_front::get(&OPENED_SESSION, self.id, &sealed, own_session)
        {
            Some((session, _)) => session,
            None => self.open_session(&sealed)?,
        };
        if now >= self.ends_at(&session) {
            return Err(SessionCookieError::Expired);
        }
        Ok(Some(session))
    }

    /// The session `sealed` opens to, from the shared cache or opened now; made this thread's
    /// last opened session.
    fn open_session(&self, sealed: &str) -> Result<std::sync::Arc<Session>, SessionCookieError> {
        let session = match self.opened.get(sealed) {
            Some(session) => session,
            None => {
                let plaintext = self
                    .sealer
                    .open("session", sealed)
                    .map_err(|_| SessionCookieError::Unreadable)?;
                // Cookies sealed before sessions were compact hold JSON.
                let session = if plaintext.first() == Some(&b'{') {
                    serde_json::from_slice(&plaintext).ok()
                } else {
                    compact::CompactSession::from_bytes(&plaintext)
                        .and_then(|session| session.expand())
                };
                let session = std::sync::Arc::new(session.ok_or(SessionCookieError::Unreadable)?);
                self.opened.insert(sealed.into(), session.clone());
                session
            }
        };
        crate::thread_front::put(&OPENED_SESSION, self.id, sealed, &session, 0);
        Ok(session)
    }

    /// `Set-Cookie` values that store `session`, replacing whatever chunks the request had.
    ///
    /// # Errors
    /// When sealing fails or the session is too large even when split.
    pub fn write_session(
        &self,
        session: &Session,
        cookies: &Cookies<'_>,
        now: UnixTime,
        attributes: CookieAttributes,
    ) -> Result<Vec<String>, SessionCookieError> {
        // Compact: decoded token bytes, claims not repeated (about half the JSON's size).
        let plaintext = compact::CompactSession::new(session).to_bytes();
        let sealed = self
            .sealer
            .seal("session", &plaintext)
            .map_err(|_| SessionCookieError::Unreadable)?;
        let chunks: Vec<&str> = sealed
            .as_bytes()
            .chunks(CHUNK_SIZE)
            .filter_map(|chunk| std::str::from_utf8(chunk).ok())
            .collect();
        if chunks.len() > MAX_CHUNKS {
            return Err(SessionCookieError::Unreadable);
        }
        let max_age = self.ends_at(session) - now;
        let mut headers = Vec::new();
        for (index, chunk) in chunks.iter().enumerate() {
            let (name, value) = if index == 0 {
                (
                    self.cookie_name.clone(),
                    format!("{}.{chunk}", chunks.len()),
                )
            } else {
                (format!("{}_{index}", self.cookie_name), (*chunk).to_owned())
            };
            headers.push(set_cookie(&name, &value, Some(max_age), attributes));
            if index == 0 {
                headers.extend(self.bind(&value, max_age, attributes));
            }
        }
        for index in chunks.len()..=MAX_CHUNKS {
            let name = format!("{}_{index}", self.cookie_name);
            if index > 0 && cookies.contains_key(name.as_str()) {
                headers.push(delete_cookie(&name, attributes));
            }
        }
        Ok(headers)
    }

    /// The session id in a server-side store's session cookie: `Ok(None)` without one.
    ///
    /// # Errors
    /// `Unreadable` when the cookie is present but not a sealed id.
    pub fn session_id(
        &self,
        cookies: &Cookies<'_>,
    ) -> Result<Option<std::sync::Arc<str>>, SessionCookieError> {
        let Some(value) = cookies.get(self.cookie_name.as_str()) else {
            return Ok(None);
        };
        let sealed = value
            .strip_prefix("s.")
            .ok_or(SessionCookieError::Unreadable)?;
        // Opened ids are remembered by their whole sealed value, like opened sessions.
        if let Some((id, _)) = crate::thread_front::get(&OPENED_ID, self.id, sealed, |id: &str| {
            std::sync::Arc::from(id)
        }) {
            return Ok(Some(id));
        }
        if let Some(id) = self.opened_ids.get(sealed) {
            crate::thread_front::put(&OPENED_ID, self.id, sealed, &id, 0);
            return Ok(Some(id));
        }
        let id = self
            .sealer
            .open("session-id", sealed)
            .map_err(|_| SessionCookieError::Unreadable)?;
        let id: std::sync::Arc<str> = String::from_utf8(id)
            .map_err(|_| SessionCookieError::Unreadable)?
            .into();
        self.opened_ids.insert(sealed.into(), id.clone());
        crate::thread_front::put(&OPENED_ID, self.id, sealed, &id, 0);
        Ok(Some(id))
    }

    /// `Set-Cookie` values holding a server-side session's id (and removing stale chunks).
    ///
    /// # Errors
    /// When sealing fails.
    pub fn write_session_id(
        &self,
        id: &str,
        max_age: i64,
        cookies: &Cookies<'_>,
        attributes: CookieAttributes,
    ) -> Result<Vec<String>, SessionCookieError> {
        let sealed = self
            .sealer
            .seal("session-id", id.as_bytes())
            .map_err(|_| SessionCookieError::Unreadable)?;
        let value = format!("s.{sealed}");
        let mut headers = vec![set_cookie(
            &self.cookie_name,
            &value,
            Some(max_age),
            attributes,
        )];
        headers.extend(self.bind(&value, max_age, attributes));
        for index in 1..=MAX_CHUNKS {
            let name = format!("{}_{index}", self.cookie_name);
            if cookies.contains_key(name.as_str()) {
                headers.push(delete_cookie(&name, attributes));
            }
        }
        Ok(headers)
    }

    /// `Set-Cookie` values that remove the session cookie and all its chunks.
    pub fn clear_session(
        &self,
        cookies: &Cookies<'_>,
        attributes: CookieAttributes,
    ) -> Vec<String> {
        let mut headers = vec![delete_cookie(&self.cookie_name, attributes)];
        if let Some(name) = &self.binding_name
            && cookies.contains_key(name.as_str())
        {
            headers.push(delete_cookie(name, attributes));
        }
        for index in 1..=MAX_CHUNKS {
            let name = format!("{}_{index}", self.cookie_name);
            if cookies.contains_key(name.as_str()) {
                headers.push(delete_cookie(&name, attributes));
            }
        }
        headers
    }

    /// The names of logins in flight begin with this. With `Secure`, `__Host-` first: a
    /// browser takes such a cookie only from this host itself (no `Domain`), so a sibling
    /// subdomain (`x.example.com`, or a page with XSS there) cannot plant its own login state
    /// for `auth.example.com`, with its own PKCE verifier and nonce, and have the victim's
    /// browser finish the attacker's login (login CSRF). Beyond SPEC §3's `<name>_login_<id>`.
    fn state_prefix(&self, attributes: CookieAttributes) -> String {
        let host_only = if attributes.secure && !self.cookie_name.starts_with("__Host-") {
            "__Host-"
        } else {
            ""
        };
        format!("{host_only}{}_login_", self.cookie_name)
    }

    fn state_cookie_name(&self, state: &str, attributes: CookieAttributes) -> String {
        format!(
            "{}{}",
            self.state_prefix(attributes),
            state.get(..12).unwrap_or(state)
        )
    }

    /// `Set-Cookie` values that start a login: its own state cookie, and the removal of the
    /// oldest logins in flight beyond the cap.
    ///
    /// # Errors
    /// When sealing fails.
    pub fn start_login(
        &self,
        login: &LoginState,
        cookies: &Cookies<'_>,
        attributes: CookieAttributes,
    ) -> Result<Vec<String>, SessionCookieError> {
        let plaintext = serde_json::to_vec(login).map_err(|_| SessionCookieError::Unreadable)?;
        let sealed = self
            .sealer
            .seal("login", &plaintext)
            .map_err(|_| SessionCookieError::Unreadable)?;
        let name = self.state_cookie_name(&login.state, attributes);
        let mut headers = vec![set_cookie(
            &name,
            &sealed,
            Some(LOGIN_STATE_LIFETIME),
            attributes,
        )];
        // Keep the newest logins, as many as the cap and the byte budget allow (the new one
        // always): unreadable ones go first, then the oldest.
        let prefix = self.state_prefix(attributes);
        let mut in_flight: Vec<(UnixTime, &str, usize)> = cookies
            .iter()
            .filter(|(other, _)| other.starts_with(&prefix) && **other != name)
            .map(|(other, value)| {
                let created = self
                    .sealer
                    .open("login", value)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<LoginState>(&bytes).ok())
                    .map_or(UnixTime::MIN, |state| state.created_at);
                (created, *other, other.len() + value.len())
            })
            .collect();
        in_flight.sort_unstable_by(|left, right| right.cmp(left));
        // The newest ones while they fit; from the first that does not, every older one goes.
        let mut kept = Some((1, name.len() + sealed.len()));
        for (_, other, size) in in_flight {
            kept = kept
                .filter(|&(count, bytes)| {
                    count < MAX_LOGINS_IN_FLIGHT && bytes + size <= LOGIN_COOKIES_BUDGET
                })
                .map(|(count, bytes)| (count + 1, bytes + size));
            if kept.is_none() {
                headers.push(delete_cookie(other, attributes));
            }
        }
        Ok(headers)
    }

    /// The login in flight for `state`, with the `Set-Cookie` that removes its cookie.
    pub fn finish_login(
        &self,
        state: &str,
        cookies: &Cookies<'_>,
        now: UnixTime,
        attributes: CookieAttributes,
    ) -> Option<(LoginState, String)> {
        let name = self.state_cookie_name(state, attributes);
        let sealed = cookies.get(name.as_str())?;
        let plaintext = self.sealer.open("login", sealed).ok()?;
        let login: LoginState = serde_json::from_slice(&plaintext).ok()?;
        let matches = crate::secret::constant_time_eq(login.state.as_bytes(), state.as_bytes());
        // Made at most `LOGIN_STATE_LIFETIME` ago, and not in the future beyond the clock
        // difference replicas may have: a state made while a clock ran ahead would else be
        // taken for as long as it ran ahead, and ten minutes more.
        let fresh = (-CLOCKS_APART..=LOGIN_STATE_LIFETIME).contains(&(now - login.created_at));
        (matches && fresh).then(|| (login, delete_cookie(&name, attributes)))
    }
}

/// A thread's own copy of `session`: its claims copied too, so no reference count is shared.
fn own_session(session: &Session) -> std::sync::Arc<Session> {
    let mut own = session.clone();
    own.claims = std::sync::Arc::new(serde_json::Map::clone(&session.claims));
    std::sync::Arc::new(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jar() -> CookieJar {
        let secret = crate::secret::Secret::new("a-session-secret-for-the-unit-tests".to_owned());
        CookieJar::new(Sealer::new(&[secret]), "tollgate".to_owned())
    }

    fn session() -> Session {
        let header = "eyJhbGciOiJSUzI1NiJ9";
        let payload = "eyJzdWIiOiJ1MSIsImVtYWlsIjoiYUBleGFtcGxlLmNvbSJ9";
        let claims = serde_json::json!({"sub": "u1", "email": "a@example.com"});
        Session {
            provider: "corp".to_owned(),
            claims: std::sync::Arc::new(claims.as_object().cloned().unwrap_or_default()),
            id_token: format!("{header}.{payload}.c2lnbmF0dXJl"),
            access_token: Some("opaque-access".to_owned()),
            refresh_token: None,
            access_expires_at: Some(150),
            created_at: 100,
            expires_at: 1000,
        }
    }

    #[test]
    fn cookie_sessions_are_sealed_compact_and_json_ones_still_open() {
        let jar = jar();
        let sent = sent_session(&jar);
        let cookies = cookies_of(&sent);
        let read = jar.session(&cookies, 200).ok().flatten();
        assert_eq!(
            read.map(|read| serde_json::to_value(&*read).ok()),
            Some(serde_json::to_value(session()).ok())
        );
        // A cookie sealed as JSON, as before sessions were compact.
        let json = serde_json::to_vec(&session()).unwrap_or_default();
        let sealed = jar.sealer.seal("session", &json).unwrap_or_default();
        let value = format!("1.{sealed}");
        assert!(
            cookies["tollgate"].len() < value.len(),
            "the compact cookie is smaller than the JSON one"
        );
        let old: Cookies<'_> = [("tollgate", value.as_str())].into_iter().collect();
        let read = jar.session(&old, 200).ok().flatten();
        assert_eq!(
            read.map(|read| read.provider.clone()).as_deref(),
            Some("corp")
        );
        assert_eq!(
            jar.session(&old, 1000).err(),
            Some(SessionCookieError::Expired)
        );
    }

    #[test]
    fn over_https_a_session_cookie_is_bound_to_the_browser_by_a_host_only_cookie() {
        let jar = jar();
        let secure = CookieAttributes {
            secure: true,
            bound: true,
        };
        let cookie_store = jar
            .write_session(&session(), &Cookies::new(), 100, secure)
            .unwrap();
        let id_store = jar
            .write_session_id("id-1", 900, &Cookies::new(), secure)
            .unwrap();
        for lines in [&cookie_store, &id_store] {
            let binding = lines
                .iter()
                .find(|line| line.starts_with("__Host-tollgate_bind="))
                .unwrap();
            assert!(binding.ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=900"));
            let held = sent(lines);
            let cookies = cookies_of(&held);
            assert!(jar.is_bound(&cookies));
            assert_eq!(jar.session_id(&cookies).is_ok(), lines == &id_store);
            // Without its binding, or with another seal's, the cookie is not this browser's.
            let mut alone = cookies.clone();
            alone.remove("__Host-tollgate_bind");
            assert!(!jar.is_bound(&alone));
            let other = sent(
                &jar.write_session_id("id-1", 900, &Cookies::new(), secure)
                    .unwrap(),
            );
            let mut mixed = cookies.clone();
            mixed.insert("__Host-tollgate_bind", &other[1].1);
            assert!(!jar.is_bound(&mixed));
            // A sign-out removes it.
            let cleared = sent(&jar.clear_session(&cookies, secure));
            assert!(cleared.contains(&("__Host-tollgate_bind".to_owned(), String::new())));
        }
        // Where the request's URL is not known, a refreshed session is written without one.
        let unknown = jar
            .write_session(
                &session(),
                &Cookies::new(),
                100,
                CookieAttributes::UNKNOWN_BASE,
            )
            .unwrap();
        assert!(unknown[0].contains("; Secure"));
        assert!(!unknown.iter().any(|line| line.contains("_bind")));
        // Sent twice, the session cookie or a chunk: another host set one.
        let twice = |cookie: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(axum::http::header::COOKIE, cookie.parse().unwrap());
            jar.is_sent_twice(&headers)
        };
        assert!(twice("tollgate=a; x=1; tollgate=b"));
        assert!(twice("tollgate=2.a; tollgate_1=b; tollgate_1=c"));
        assert!(!twice(
            "tollgate=2.a; tollgate_1=b; tollgate_bind=c; tollgatex=d; tollgatex=e"
        ));
        // Each value of the session cookie once, at most four, the one the binding names
        // first (whichever comes first in the header).
        let each = |cookie: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(axum::http::header::COOKIE, cookie.parse().unwrap());
            jar.each_session_cookie(&headers)
                .iter()
                .map(|cookies| cookies["tollgate"].to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            each(
                "tollgate=s.a; tollgate=s.a; tollgate=s.b; tollgate=s.a; tollgate=s.c; tollgate=s.d; tollgate=s.e"
            ),
            ["s.a", "s.b", "s.c", "s.d"]
        );
        let own = "s.0123456789abcdefghijklmnopqrstuvwxyz";
        let binding = binding_of(own).unwrap();
        assert_eq!(
            each(&format!(
                "tollgate=s.planted; tollgate={own}; __Host-tollgate_bind={binding}"
            )),
            [own, "s.planted"]
        );
        assert_eq!(each("tollgate=s.a"), ["s.a"]);
        // Thousands of values: the own one, sent last, is still found.
        let many: String = (0..5_000)
            .map(|index| format!("tollgate=s.v{index}; "))
            .collect();
        assert_eq!(
            each(&format!(
                "{many}tollgate={own}; __Host-tollgate_bind={binding}"
            )),
            [own, "s.v0", "s.v1", "s.v2"]
        );
        // The own one is kept behind four others.
        assert_eq!(
            each(&format!(
                "tollgate=s.p1; tollgate=s.p2; tollgate=s.p3; tollgate=s.p4; tollgate={own}; \
                 __Host-tollgate_bind={binding}"
            )),
            [own, "s.p1", "s.p2", "s.p3"]
        );
        // Nothing to bind without a session cookie; over plain http, no `__Host-` cookie.
        assert!(jar.is_bound(&Cookies::new()));
        let plain = jar
            .write_session(
                &session(),
                &Cookies::new(),
                100,
                CookieAttributes {
                    secure: false,
                    bound: false,
                },
            )
            .unwrap();
        assert!(!plain.iter().any(|line| line.contains("_bind")));
        // A `__Host-` session cookie is host-only itself.
        let host_only = CookieJar::new(
            Sealer::new(&[crate::secret::Secret::new(
                "a-session-secret-for-the-unit-tests".to_owned(),
            )]),
            "__Host-tg".to_owned(),
        );
        let lines = host_only
            .write_session(&session(), &Cookies::new(), 100, secure)
            .unwrap();
        assert_eq!(lines.len(), 1);
        assert!(host_only.is_bound(&cookies_of(&sent(&lines))));
    }

    /// What the browser sends back for the cookie that `jar` writes for `session()`.
    fn sent_session(jar: &CookieJar) -> Vec<(String, String)> {
        let lines = jar
            .write_session(
                &session(),
                &Cookies::new(),
                100,
                CookieAttributes {
                    secure: true,
                    bound: true,
                },
            )
            .unwrap_or_default();
        sent(&lines)
    }

    /// A request's cookies, as sent.
    fn login(state: &str, redirect_to: &str, created_at: UnixTime) -> LoginState {
        LoginState {
            state: state.to_owned(),
            nonce: "n".repeat(43),
            code_verifier: "v".repeat(43),
            redirect_to: redirect_to.to_owned(),
            provider: "corp".to_owned(),
            redirect_uri: "https://auth.example.com/callback".to_owned(),
            created_at,
            federation: None,
        }
    }

    /// The login cookies a browser holds after each `Set-Cookie` of a login start.
    fn start_logins(jar: &CookieJar, logins: &[LoginState]) -> Vec<(String, String)> {
        let mut held: Vec<(String, String)> = Vec::new();
        for login in logins {
            let lines = jar
                .start_login(
                    login,
                    &cookies_of(&held),
                    CookieAttributes {
                        secure: true,
                        bound: true,
                    },
                )
                .unwrap();
            for line in lines {
                let (pair, attributes) = line.split_once(';').unwrap_or((&line, ""));
                let (name, value) = pair.split_once('=').unwrap();
                held.retain(|(kept, _)| kept != name);
                if !attributes.contains("Max-Age=0") {
                    held.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        held
    }

    /// Over https a login's state is in a `__Host-` cookie, which only this host can set: one
    /// of the plain name (which a sibling subdomain can set with `Domain`) finishes nothing.
    #[test]
    fn a_login_state_over_https_is_read_only_from_a_host_only_cookie() {
        let jar = jar();
        let secure = CookieAttributes {
            secure: true,
            bound: true,
        };
        let login = login("planted-0123456789abcdef", "/page", 100);
        let lines = jar.start_login(&login, &Cookies::new(), secure).unwrap();
        let (pair, _) = lines[0].split_once(';').unwrap();
        let (name, value) = pair.split_once('=').unwrap();
        assert_eq!(name, "__Host-tollgate_login_planted-0123");
        let own = Cookies::from([(name, value)]);
        assert!(jar.finish_login(&login.state, &own, 101, secure).is_some());
        let planted = Cookies::from([("tollgate_login_planted-0123", value)]);
        assert!(
            jar.finish_login(&login.state, &planted, 101, secure)
                .is_none()
        );
        // Plain http on loopback cannot use the prefix (it requires `Secure`).
        let plain = CookieAttributes {
            secure: false,
            bound: false,
        };
        let lines = jar.start_login(&login, &Cookies::new(), plain).unwrap();
        assert!(
            lines[0].starts_with("tollgate_login_planted-0123="),
            "{lines:?}"
        );
    }

    /// A login state is taken up to ten minutes after it was made, and when made by a clock a
    /// minute or less ahead; not when made further in the future (a clock that ran ahead
    /// would else make states good for as long as it ran ahead, and ten minutes more).
    #[test]
    fn a_login_state_is_taken_within_its_lifetime_by_clocks_a_minute_apart() {
        let jar = jar();
        let attributes = CookieAttributes {
            secure: true,
            bound: true,
        };
        let login = login("clock-0123456789abcdef", "/page", 100);
        let lines = jar
            .start_login(&login, &Cookies::new(), attributes)
            .unwrap();
        let (pair, _) = lines[0].split_once(';').unwrap();
        let (name, value) = pair.split_once('=').unwrap();
        let own = Cookies::from([(name, value)]);
        for (now, taken) in [(40, true), (39, false), (700, true), (701, false)] {
            assert_eq!(
                jar.finish_login(&login.state, &own, now, attributes)
                    .is_some(),
                taken,
                "at {now}, made at 100"
            );
        }
    }

    #[test]
    fn login_cookies_stay_within_their_count_and_their_bytes() {
        let jar = jar();
        // Five tabs with ordinary return URLs: all five logins are kept.
        let tabs: Vec<LoginState> = (0..6)
            .map(|tab| login(&format!("tab{tab}-0123456789abcdef"), "/page", 100 + tab))
            .collect();
        let held = start_logins(&jar, &tabs);
        assert_eq!(held.len(), MAX_LOGINS_IN_FLIGHT, "{held:?}");
        assert!(
            held.iter().all(|(name, _)| !name.ends_with("tab0-0123456")),
            "the oldest went"
        );
        // Navigations to long return URLs, one after another (a page can make a browser do
        // that): the newest stays, and never more bytes than the budget.
        let long = format!("/{}", "x".repeat(2000));
        let big: Vec<LoginState> = (0..5)
            .map(|round| login(&format!("big{round}-0123456789abcdef"), &long, 200 + round))
            .collect();
        let held = start_logins(&jar, &big);
        let bytes: usize = held
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        assert!(
            bytes <= LOGIN_COOKIES_BUDGET,
            "{bytes} bytes in {} cookies",
            held.len()
        );
        assert!(
            held.iter().any(|(name, _)| name.ends_with("big4-0123456")),
            "{held:?}"
        );
    }

    fn cookies_of(sent: &[(String, String)]) -> Cookies<'_> {
        sent.iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect()
    }

    /// What the browser sends back for `Set-Cookie` lines.
    fn sent(lines: &[String]) -> Vec<(String, String)> {
        lines
            .iter()
            .filter_map(|line| line.split(';').next()?.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()
    }

    /// Each refresh of a cookie session makes another valid cookie value: opened sessions are
    /// kept by weight, so cookies minted to fill the cache (here 20 KB ones) hold at most
    /// `OPENED_WEIGHT_MOST`, not ten thousand of them.
    #[test]
    fn opened_sessions_are_kept_by_weight_not_by_count() {
        let jar = jar();
        let large = Session {
            access_token: Some("a".repeat(20_000)),
            ..session()
        };
        let plaintext = compact::CompactSession::new(&large).to_bytes();
        let (mut opened, mut each) = (0_u64, 0_u64);
        while opened <= 2 * OPENED_WEIGHT_MOST {
            let sealed = jar.sealer.seal("session", &plaintext).unwrap();
            jar.open_session(&sealed).unwrap();
            each = u64::try_from(sealed.len() * 5).unwrap();
            opened += each;
        }
        let kept = u64::try_from(jar.opened.len()).unwrap() * each;
        assert!(
            kept <= OPENED_WEIGHT_MOST,
            "{} kept, {kept} bytes",
            jar.opened.len()
        );
    }

    #[test]
    fn a_threads_last_cookie_is_never_opened_by_another_jar() {
        let (ours, theirs) = (jar(), {
            let secret = crate::secret::Secret::new("another-secret-for-the-unit-tests".to_owned());
            CookieJar::new(Sealer::new(&[secret]), "tollgate".to_owned())
        });
        let session_sent = sent_session(&ours);
        let lines = ours
            .write_session_id(
                "the-id",
                900,
                &Cookies::new(),
                CookieAttributes {
                    secure: true,
                    bound: true,
                },
            )
            .unwrap_or_default();
        let id_sent = sent(&lines);
        let (session_cookies, id_cookies) = (cookies_of(&session_sent), cookies_of(&id_sent));
        // Read twice: this thread's entries now hold both cookies, as its own copies.
        for _ in 0..2 {
            assert!(
                ours.session(&session_cookies, 200)
                    .is_ok_and(|read| read.is_some())
            );
            assert_eq!(
                ours.session_id(&id_cookies).ok().flatten().as_deref(),
                Some("the-id")
            );
        }
        // The same text at a jar with other secrets opens to nothing.
        assert_eq!(
            theirs.session(&session_cookies, 200).err(),
            Some(SessionCookieError::Unreadable)
        );
        assert_eq!(
            theirs.session_id(&id_cookies).err(),
            Some(SessionCookieError::Unreadable)
        );
    }

    #[test]
    fn the_second_read_in_a_row_is_the_threads_own_copy() {
        let jar = jar();
        let sent = sent_session(&jar);
        let cookies = cookies_of(&sent);
        let read = || jar.session(&cookies, 200).ok().flatten();
        let (Some(first), Some(second), Some(third)) = (read(), read(), read()) else {
            panic!("the session opens");
        };
        // The first is the shared cache's; from the second on, the thread's own.
        assert!(!std::sync::Arc::ptr_eq(&first, &second));
        assert!(!std::sync::Arc::ptr_eq(&first.claims, &second.claims));
        assert!(std::sync::Arc::ptr_eq(&second, &third));
        assert_eq!(
            serde_json::to_value(&*second).ok(),
            serde_json::to_value(&*first).ok()
        );
    }
}
