//! The values a route's identity headers get (SPEC §5 `headers`): a claim, a JSONPath over
//! the claims, the access or ID token, or the userinfo as base64 JSON. Each thread keeps the
//! headers it rendered last, for one session on one route: a session's values are the same
//! until it changes, and a changed session (a refresh) is another `Session`.

use std::cell::RefCell;
use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use base64::Engine as _;

use crate::config::{HeaderSource, RouteConfig};
use crate::identity::Identity;
use crate::session::Session;

/// A route's identity headers with their values.
pub(super) type Rendered = Arc<[(HeaderName, HeaderValue)]>;

/// What a thread rendered last: for this session (held, so no other session can take its
/// address) on the route at this address of the route table with this number (a table's
/// routes stay where they are while it lives, and no later table has its number).
struct Last {
    table: u64,
    route: usize,
    session: Arc<Session>,
    headers: Rendered,
}

thread_local! {
    static LAST: RefCell<Option<Last>> = const { RefCell::new(None) };
}

/// The headers this thread rendered last, when they were for `session` on `route` of table
/// `table`.
pub(super) fn rendered(
    table: u64,
    route: &RouteConfig,
    session: &Arc<Session>,
) -> Option<Rendered> {
    let address = std::ptr::from_ref(route) as usize;
    LAST.with(|last| {
        let last = last.try_borrow().ok()?;
        let last = last.as_ref()?;
        (last.table == table && last.route == address && Arc::ptr_eq(&last.session, session))
            .then(|| last.headers.clone())
    })
}

/// Keeps `headers` as this thread's last, rendered for `session` on `route` of table `table`.
pub(super) fn remember(
    table: u64,
    route: &RouteConfig,
    session: &Arc<Session>,
    headers: &Rendered,
) {
    LAST.with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            *last = Some(Last {
                table,
                route: std::ptr::from_ref(route) as usize,
                session: session.clone(),
                headers: headers.clone(),
            });
        }
    });
}

/// The value of one identity header: `Ok(None)` when the identity has nothing for it, `Err`
/// when its value holds characters a header cannot carry (CR, LF, NUL, …).
pub(super) fn header_value(
    identity: &Identity,
    source: &HeaderSource,
) -> Result<Option<HeaderValue>, ()> {
    let Some(text) = header_text(identity, source) else {
        return Ok(None);
    };
    HeaderValue::from_maybe_shared(axum::body::Bytes::from(text))
        .map(Some)
        .map_err(|_| ())
}

fn header_text(identity: &Identity, source: &HeaderSource) -> Option<String> {
    let access_token = identity.access_token();
    Some(match source {
        HeaderSource::AccessToken => access_token?.to_owned(),
        HeaderSource::BearerAccessToken => format!("Bearer {}", access_token?),
        HeaderSource::IdToken => identity.session.as_ref()?.id_token.clone(),
        HeaderSource::UserinfoBase64 => base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(identity.claims.as_ref()).ok()?),
        HeaderSource::Claim(name) => {
            crate::policy::header_text(crate::policy::vouched_claim(&identity.claims, name)?)
        }
        HeaderSource::Json(path) => {
            let mut claims = identity.claims.as_ref().clone();
            if crate::policy::vouched_claim(&claims, "email").is_none() {
                claims.remove("email");
            }
            let document = serde_json::Value::Object(claims);
            return crate::policy::json_path_text(&document, path);
        }
    })
}
