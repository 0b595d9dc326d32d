//! The admin listener (SPEC §8): `/metrics`, `/healthz`, `/readyz`, `/admin/sessions`,
//! `/admin/explain`. Never mounted on the public listener.

pub mod explain;
mod refusal;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::issuer::TokenService;
use crate::metrics::Metrics;
use crate::oidc::Providers;
use crate::secret::Secret;
use crate::session::store::Sessions;
pub use explain::ExplainState;
use refusal::{AdminRefusal, refuse};

/// What the admin endpoints use, built once by the wiring.
pub struct AdminState {
    /// `server.admin_token`: without it the admin API is disabled.
    pub admin_token: Option<Secret<String>>,
    /// Metrics, rendered at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Providers, discovered for `/readyz`.
    pub providers: Arc<Providers>,
    /// The session store: `/readyz` checks it, `/admin/sessions` lists and ends sessions.
    pub sessions: Option<Arc<Sessions>>,
    /// The token service, whose store `/readyz` checks.
    pub token_service: Option<Arc<TokenService>>,
    /// Wall-clock time: the sessions listed are those not ended now.
    pub clock: Arc<dyn crate::clock::Clock>,
}

/// The admin routes: `state`'s and `POST /admin/explain`.
pub fn router(state: Arc<AdminState>, explain: Arc<ExplainState>) -> Router {
    routes(state).merge(
        Router::new()
            .route("/admin/explain", axum::routing::post(explain::explain))
            .with_state(explain),
    )
}

/// The admin routes but `/admin/explain`.
fn routes(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/admin/sessions",
            get(list_sessions).delete(end_sessions_of_sub),
        )
        .route(
            "/admin/sessions/{handle}",
            axum::routing::delete(end_session),
        )
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    // Set on every scrape, to 0 where the store cannot count (`cookie`, `redis`) or there are
    // no sessions: a reload away from the memory store must not leave its last count behind.
    let active = state
        .sessions
        .as_ref()
        .and_then(|sessions| sessions.active())
        .unwrap_or(0);
    state
        .metrics
        .sessions_active
        .set(i64::try_from(active).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when every provider has been discovered (discovery is attempted here if needed).
async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let mut problems = Vec::new();
    for provider in state.providers.values() {
        if !provider.is_discovered()
            && let Err(error) = provider.metadata().await
        {
            problems.push(format!("provider {}: {error}", provider.name()));
        }
    }
    if let Some(sessions) = state.sessions.as_ref()
        && let Err(error) = sessions.check().await
    {
        problems.push(format!("session store: {error}"));
    }
    if let Some(service) = state.token_service.as_ref()
        && let Err(error) = service.check_store().await
    {
        problems.push(format!("token service store: {error}"));
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", problems.join("\n")),
        )
            .into_response()
    }
}

/// The admin API answers only to `Authorization: Bearer <server.admin_token>`, compared in
/// constant time; without a configured token it is disabled.
fn check_token(
    admin_token: Option<&Secret<String>>,
    headers: &HeaderMap,
) -> Result<(), AdminRefusal> {
    let expected = admin_token.ok_or(AdminRefusal::Disabled)?;
    let presented = crate::identity::bearer_token(headers)
        .and_then(Result::ok)
        .unwrap_or("");
    if crate::secret::constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(AdminRefusal::WrongToken)
    }
}

/// Query of the admin session endpoints: a user, and the provider that names it (a `sub` is
/// unique only at its issuer: two providers' `alice` are two people).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SubQuery {
    sub: Option<String>,
    provider: Option<String>,
}

type SubQueryResult = Result<Query<SubQuery>, axum::extract::rejection::QueryRejection>;

/// The query's `sub` and `provider`, or `BadQuery` for anything else (a field twice, another
/// field), which must not be read as "no filter"; `UnknownProvider` for a provider `state`
/// does not have.
fn sub_query(state: &AdminState, query: SubQueryResult) -> Result<SubQuery, AdminRefusal> {
    let Query(query) = query.map_err(|_| AdminRefusal::BadQuery)?;
    match &query.provider {
        Some(provider) if !state.providers.contains_key(provider) => {
            Err(AdminRefusal::UnknownProvider)
        }
        _ => Ok(query),
    }
}

/// The answer of an admin session endpoint: its response, or its refusal, counted and logged.
fn answer(state: &AdminState, result: Result<Response, AdminRefusal>) -> Response {
    let mut response = result.unwrap_or_else(|refusal| refuse(&state.metrics, refusal));
    // Users' `sub`s and sessions: for no cache between the operator and Tollgate to keep.
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

/// The server-side session store.
fn sessions(state: &AdminState) -> Result<&Sessions, AdminRefusal> {
    state.sessions.as_deref().ok_or(AdminRefusal::NotServerSide)
}

/// `GET /admin/sessions[?sub=…[&provider=…]]`.
async fn list_sessions(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    query: SubQueryResult,
) -> Response {
    let result = async {
        check_token(state.admin_token.as_ref(), &headers)?;
        let query = sub_query(&state, query)?;
        let list = sessions(&state)?
            .list(
                query.sub.as_deref(),
                query.provider.as_deref(),
                state.clock.now(),
            )
            .await?;
        Ok(axum::Json(list).into_response())
    };
    answer(&state, result.await)
}

/// `DELETE /admin/sessions?sub=…[&provider=…]`: ends every session of a user (at one
/// provider, when named).
async fn end_sessions_of_sub(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    query: SubQueryResult,
) -> Response {
    let result = async {
        check_token(state.admin_token.as_ref(), &headers)?;
        let query = sub_query(&state, query)?;
        let sub = query
            .sub
            .filter(|sub| !sub.is_empty())
            .ok_or(AdminRefusal::MissingSub)?;
        let selector = match query.provider.as_deref() {
            Some(provider) => crate::session::store::SessionSelector::SubAt {
                provider,
                sub: &sub,
            },
            None => crate::session::store::SessionSelector::Sub(&sub),
        };
        let ended = sessions(&state)?.end_selected(selector).await?;
        tracing::info!(ended, "admin ended the sessions of a user");
        Ok(axum::Json(serde_json::json!({ "ended": ended })).into_response())
    };
    answer(&state, result.await)
}

/// `DELETE /admin/sessions/{handle}`.
async fn end_session(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(handle): Path<String>,
) -> Response {
    let result = async {
        check_token(state.admin_token.as_ref(), &headers)?;
        let ended = sessions(&state)?
            .end_selected(crate::session::store::SessionSelector::Handle(&handle))
            .await?;
        if ended == 0 {
            return Err(AdminRefusal::NoSuchSession);
        }
        // The handle names the session in listings only; it opens nothing.
        tracing::info!(handle = %handle, "admin ended a session");
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    answer(&state, result.await)
}

#[cfg(test)]
mod tests;
