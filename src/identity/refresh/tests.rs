//! Unit tests of the refresher against a session store in memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{RefreshError, Refresher};
use crate::clock::{SystemClock, UnixTime};
use crate::metrics::Metrics;
use crate::oidc::Provider;
use crate::secret::Secret;
use crate::session::memory_store::MemoryStore;
use crate::session::seal::Sealer;
use crate::session::store::tests::cookie_header;
use crate::session::store::{SessionBackend, Sessions};
use crate::session::{CookieAttributes, CookieJar, Cookies, Session, request_cookies};

const NOW: UnixTime = 1_800_000_000;
const SECRET: &str = "a-unit-test-session-secret-a-unit-test";
const ATTRIBUTES: CookieAttributes = CookieAttributes {
    secure: true,
    bound: true,
};

fn sessions() -> Arc<Sessions> {
    let sealer = || Sealer::new(&[Secret::new(SECRET.to_owned())]);
    Arc::new(Sessions::new(
        CookieJar::new(sealer(), "tollgate".to_owned()),
        SessionBackend::Memory(Arc::new(MemoryStore::open(None, sealer(), NOW))),
        std::time::Duration::from_secs(3600),
        Arc::new(Metrics::new()),
    ))
}

/// A provider at `issuer`, with the refresh due 60 s before the access token expires.
fn provider(issuer: &str, metrics: &Arc<Metrics>) -> Arc<Provider> {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[session]\nsecrets = [\"{SECRET}\"]\n\
         [[provider]]\nname = \"corp\"\nissuer = \"{issuer}\"\nclient_id = \"gateway\"\n\
         client_auth = \"none\"\n"
    );
    let config = crate::config::load(&text, &BTreeMap::new()).unwrap();
    let provider = config.providers[0].clone();
    Arc::new(Provider::new(
        provider.clone(),
        crate::oidc::client::HttpClient::new(provider.timeout).unwrap(),
        None,
        Arc::new(crate::token::cache::TokenCache::new(16)),
        Arc::new(SystemClock),
        60,
        metrics.clone(),
    ))
}

/// A request read its session, due for a refresh, and the session was ended (a logout, an
/// admin delete, a back-channel logout) before the refresh began: its refresh token is never
/// presented (the provider may have ended the session itself, and a rotating one takes a
/// token presented after that for theft), and the request is not served from the session it
/// read. Before, the provider was asked, and when it could not be reached the ended session
/// served the request.
#[tokio::test]
async fn an_ended_sessions_refresh_token_is_never_presented() {
    // The provider: a listener that counts who connects.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = asked.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let metrics = Arc::new(Metrics::new());
    let provider = provider(&issuer, &metrics);
    let sessions = sessions();
    let due = Session {
        provider: "corp".to_owned(),
        claims: crate::token::Claims::default(),
        id_token: "id".to_owned(),
        access_token: Some("at".to_owned()),
        refresh_token: Some("r-1".to_owned()),
        access_expires_at: Some(NOW + 30),
        created_at: NOW,
        expires_at: NOW + 3600,
    };
    let set = sessions
        .create(due, &Cookies::default(), NOW, ATTRIBUTES)
        .await
        .unwrap();
    let headers = cookie_header(&set);
    let cookies = request_cookies(&headers);
    let read = sessions.load(&cookies, NOW).await.unwrap().unwrap();
    sessions.end(&cookies, NOW, ATTRIBUTES).await.unwrap();

    let refresher = Refresher::new(true, std::time::Duration::from_secs(60), metrics);
    assert!(refresher.is_due(&read, NOW));
    let answer = refresher
        .refresh_if_due(&provider, &sessions, &cookies, read, NOW, ATTRIBUTES)
        .await;
    assert!(
        matches!(answer, Err(RefreshError::Ended(_))),
        "an ended session is served: {answer:?}"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 0, "the provider was asked");
}

/// A request read its session, its access token expired and its refresh due, while another
/// request's refresh failed after the provider had rotated the refresh token: the store holds
/// the session with the rotated token and the same expired access token. That is not a
/// refreshed session: the request is told the provider is unavailable (as the request whose
/// refresh failed was), never served on the expired token. Before, any session stored with
/// another refresh token was served as the other refresh's result.
#[tokio::test]
async fn a_session_another_refresh_kept_with_an_expired_access_token_is_not_served() {
    let metrics = Arc::new(Metrics::new());
    // Never asked: the session holds another refresh token than the one read.
    let provider = provider("http://127.0.0.1:9", &metrics);
    let sessions = sessions();
    let expired = Session {
        provider: "corp".to_owned(),
        claims: crate::token::Claims::default(),
        id_token: "id".to_owned(),
        access_token: Some("at".to_owned()),
        refresh_token: Some("r-1".to_owned()),
        access_expires_at: Some(NOW - 10),
        created_at: NOW - 600,
        expires_at: NOW + 3600,
    };
    let set = sessions
        .create(expired, &Cookies::default(), NOW, ATTRIBUTES)
        .await
        .unwrap();
    let headers = cookie_header(&set);
    let cookies = request_cookies(&headers);
    let read = sessions.load(&cookies, NOW).await.unwrap().unwrap();
    let mut kept = Session::clone(&read);
    kept.refresh_token = Some("r-2".to_owned());
    sessions
        .replace_refreshed(&cookies, &read, &kept, NOW, ATTRIBUTES)
        .await
        .unwrap();

    let refresher = Refresher::new(true, std::time::Duration::from_secs(60), metrics);
    let answer = refresher
        .refresh_if_due(&provider, &sessions, &cookies, read, NOW, ATTRIBUTES)
        .await;
    assert!(
        matches!(answer, Err(RefreshError::ProviderUnavailable { .. })),
        "a session with an expired access token is served: {answer:?}"
    );
}
