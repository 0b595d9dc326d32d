//! A request that went upstream and whose connection ended before it was answered. hyper
//! drops a request's future when its client closes the connection (or resets its HTTP/2
//! stream), as does the end of a drain at shutdown, so the decision line written once the
//! answer is ready (`decided`) never was, nor the request counted, though the upstream had the
//! request and may have acted on it: anyone signed in could leave no trace of what they chose
//! by hanging up. [`Unanswered`] writes that line, and counts the request, when it is dropped
//! before [`Unanswered::answered`].

use axum::http::HeaderValue;

use super::ProxyState;
use crate::config::RouteConfig;
use crate::logging::decision::Decision as DecisionLine;

/// Why the line of a request whose connection ended is written without an answer.
const REASON: &str = "the connection ended before the request was answered";

/// A proxy decision line for `route`, with the request's `X-Request-Id`.
pub fn line<'a>(route: &'a RouteConfig, request_id: Option<&'a HeaderValue>) -> DecisionLine<'a> {
    DecisionLine {
        role: "proxy",
        route: Some((route.host.as_deref().unwrap_or(""), &route.path_prefix)),
        request_id: request_id.and_then(|id| id.to_str().ok()),
        ..DecisionLine::default()
    }
}

/// A decision whose request is on its way upstream: held across the exchange.
pub struct Unanswered<'a> {
    state: &'a ProxyState,
    route: &'a RouteConfig,
    request_id: Option<&'a HeaderValue>,
    /// The decision (`allow`, `skip`, `pass`) and its credential; `None` once answered.
    decided: Option<(&'static str, Option<&'static str>)>,
}

impl<'a> Unanswered<'a> {
    pub fn new(
        state: &'a ProxyState,
        route: &'a RouteConfig,
        request_id: Option<&'a HeaderValue>,
        result: &'static str,
        credential: Option<&'static str>,
    ) -> Self {
        Self {
            state,
            route,
            request_id,
            decided: Some((result, credential)),
        }
    }

    /// The upstream answered or failed: the request's own line is written, not this one.
    pub fn answered(mut self) {
        self.decided = None;
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        let Some((result, credential)) = self.decided else {
            return;
        };
        self.state.metrics.request("proxy", result);
        crate::log_decision!(
            info,
            DecisionLine {
                result,
                credential,
                reason: Some(&REASON),
                ..line(self.route, self.request_id)
            }
        );
    }
}
