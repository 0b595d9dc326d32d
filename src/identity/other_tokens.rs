//! Tokens a request carries besides the credential that identified the caller. The application
//! behind may read any of them (a session-authenticated browser that also sends
//! `Authorization: Bearer`, or `?access_token=` beside a token cookie), so each must be one
//! Tollgate would accept, and name the same caller: otherwise the application acts for someone
//! Tollgate never checked.

use std::borrow::Cow;
use std::sync::Arc;

use axum::http::HeaderMap;

use super::{
    Credential, Identity, cookie_name_as_read, cookies_read_as, token_error,
    tokens_an_application_may_read,
};
use crate::http::forwarded::ClientAddress;
use crate::http::rejection::{Refusal, Rejection};
use crate::oidc::Provider;
use crate::policy::Trace;
use crate::token::Claims;

/// A token that did not identify the caller, and where it was.
#[derive(Debug, PartialEq, Eq)]
pub struct OtherToken<'a> {
    /// Where it was: the credential kind it would be, or `query`.
    pub place: &'static str,
    /// The token; empty for an `Authorization: Bearer` header that is malformed.
    pub token: Cow<'a, str>,
}

/// What of a request reaches the application unchanged: the `Authorization` header (not when
/// the proxy removes it), the query of the URL the application will see, the configured token
/// cookie.
#[derive(Debug, Clone, Copy)]
pub struct Reaching<'a, 'q> {
    /// Whether the client's `Authorization` header reaches the application.
    pub authorization: bool,
    /// The queries the application may see (their tokens are copied out of them).
    pub queries: &'q [Cow<'q, str>],
    /// The configured token cookie's name.
    pub token_cookie: Option<&'a str>,
}

/// The tokens of `headers` and `reaching.queries` that did not identify the caller (`used`;
/// none when nobody was identified): a token in `Authorization` (`tokens_an_application_may_read`), a cookie an application reads as the
/// token cookie (`cookie_name_as_read`), every parameter of a query that an application reads
/// as `access_token` (`query_tokens`; never a credential). An empty cookie or parameter is no
/// token.
pub fn other_tokens<'a>(
    headers: &'a HeaderMap,
    reaching: Reaching<'a, '_>,
    used: Option<Credential>,
) -> Vec<OtherToken<'a>> {
    let mut others = Vec::new();
    if reaching.authorization
        && used != Some(Credential::Bearer)
        && let Some(value) = headers.get(axum::http::header::AUTHORIZATION)
    {
        others.extend(
            tokens_an_application_may_read(value).map(|bearer| OtherToken {
                place: Credential::Bearer.as_str(),
                token: Cow::Borrowed(bearer.unwrap_or("")),
            }),
        );
    }
    if let Some(name) = reaching.token_cookie
        && used != Some(Credential::TokenCookie)
    {
        others.extend(
            cookies_read_as(headers, name)
                .filter_map(|pair| pair.value.filter(|value| !value.is_empty()))
                .map(|token| OtherToken {
                    place: Credential::TokenCookie.as_str(),
                    token: Cow::Borrowed(token),
                }),
        );
    }
    for query in reaching.queries {
        others.extend(query_tokens(query).map(|token| OtherToken {
            place: "query",
            token: Cow::Owned(token),
        }));
    }
    others
}

/// The values of `query` that the laxest application reads as `access_token`, but for empty
/// ones, which are no token: see `access_token_parameters`.
pub fn query_tokens(query: &str) -> impl Iterator<Item = String> {
    access_token_parameters(query).filter(|token| !token.is_empty())
}

/// The values of `query` that the laxest application reads as `access_token`: parameters
/// split at `&` and at `;` (Rack, older Python and Go), names read as `query_name_as_read`
/// says. A query, or a name, that holds no `%` and no `token` in any case has none, and is
/// not decoded.
pub fn access_token_parameters(query: &str) -> impl Iterator<Item = String> {
    let may_hold = |text: &str| {
        memchr::memchr(b'%', text.as_bytes()).is_some()
            || text
                .as_bytes()
                .windows(5)
                .any(|window| window.eq_ignore_ascii_case(b"token"))
    };
    let parameters = may_hold(query)
        .then(|| query.split(['&', ';']))
        .into_iter()
        .flatten();
    parameters.filter_map(move |parameter| {
        let (name, value) = parameter.split_once('=')?;
        if !may_hold(name) || query_name_as_read(name) != "access_token" {
            return None;
        }
        let value = value.replace('+', " ");
        let value = percent_encoding::percent_decode_str(&value).decode_utf8_lossy();
        Some(value.into_owned())
    })
}

/// A query parameter's name as the laxest application reads it: form-decoded, cut at a NUL
/// and without leading spaces (PHP), without the `[` and `]` around it (Rack 2 drops every
/// leading one), without an
/// array's `[…]` after it (`access_token[]`, `access_token[0]`: PHP, Rack and Express `qs`
/// give the application a list holding the token), then as `cookie_name_as_read` reads a
/// cookie's (case, PHP's `.`, space and `[` as `_`).
fn query_name_as_read(name: &str) -> String {
    let spaced = name.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy();
    let cut = decoded.split('\0').next().unwrap_or_default();
    let bare = cut.trim_start_matches(' ').trim_start_matches(['[', ']']);
    let bare = match bare.find('[') {
        Some(open) if bare[open..].contains(']') => &bare[..open],
        _ => bare,
    };
    cookie_name_as_read(bare.trim_end_matches(']'))
}

/// Whether two sets of claims name the same caller: the same `sub`, and the same `iss` when
/// both say one (`/validate` accepts tokens of the provider and of the token service).
pub fn same_caller(one: &Claims, other: &Claims) -> bool {
    let issuers_agree = match (one.get("iss"), other.get("iss")) {
        (Some(one), Some(other)) => one == other,
        _ => true,
    };
    match (one.get("sub"), other.get("sub")) {
        (Some(one), Some(other)) => issuers_agree && one == other,
        _ => false,
    }
}

/// Checks each of `others` at `provider`: it must be valid (401, `invalid_token` for a bearer
/// token) and name `identity`'s caller (400 otherwise); with no identity, valid is enough.
///
/// # Errors
/// The refusal, as the caller is told it.
pub async fn check_other_tokens(
    provider: &Arc<Provider>,
    identity: Option<&Identity>,
    others: Vec<OtherToken<'_>>,
    client: ClientAddress<'_>,
    trace: &mut Trace,
) -> Result<(), Refusal> {
    // The session's own access token, sent by the page it serves: its `sub` may differ from
    // the ID token's (Okta, Entra ID), and it was the provider's answer to this login.
    let own = identity
        .filter(|identity| identity.credential == Credential::SessionCookie)
        .and_then(Identity::access_token);
    for other in others {
        if own.is_some_and(|own| {
            crate::secret::constant_time_eq(own.as_bytes(), other.token.as_bytes())
        }) {
            trace.record("other token", "valid", || {
                format!(
                    "the {} token is the session's own access token",
                    other.place
                )
            });
            continue;
        }
        let claims = match provider.validate_access_token(&other.token, client).await {
            Ok(claims) => claims,
            Err(error) => {
                let credential = match other.place {
                    "bearer" => Credential::Bearer,
                    _ => Credential::TokenCookie,
                };
                let error = match token_error(credential, error) {
                    super::IdentityError::Invalid { reason, .. } => super::IdentityError::Invalid {
                        credential: other.place,
                        reason: format!("a second token, not the credential: {reason}"),
                    },
                    other => other,
                };
                trace.record("other token", "invalid", || error.to_string());
                return Err(error.into());
            }
        };
        if let Some(identity) = identity
            && !same_caller(&identity.claims, &claims)
        {
            let reason = "tokens of two callers";
            trace.record("other token", "fail", || {
                format!("the {} token names another caller", other.place)
            });
            return Err(Refusal::new(
                Rejection::InvalidRequest(reason.to_owned()),
                reason,
            ));
        }
        trace.record("other token", "valid", || {
            format!("the {} token names the same caller", other.place)
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, header};

    use super::*;

    fn request(authorization: Option<&'static str>, cookie: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        }
        if let Some(value) = cookie {
            headers.insert(header::COOKIE, HeaderValue::from_static(value));
        }
        headers
    }

    fn places<'a>(others: &'a [OtherToken<'a>]) -> Vec<(&'static str, &'a str)> {
        others
            .iter()
            .map(|other| (other.place, other.token.as_ref()))
            .collect()
    }

    #[test]
    fn every_token_that_did_not_identify_the_caller_is_found() {
        let everything = Reaching {
            authorization: true,
            queries: &[Cow::Borrowed("a=1&access_token=q%2B1&access_token=q2")],
            token_cookie: Some("tok"),
        };
        let headers = request(Some("Bearer b"), Some("session=s; TOK=c"));
        let found = other_tokens(&headers, everything, Some(Credential::SessionCookie));
        assert_eq!(
            places(&found),
            [
                ("bearer", "b"),
                ("token_cookie", "c"),
                ("query", "q+1"),
                ("query", "q2")
            ]
        );
        let found = other_tokens(&headers, everything, Some(Credential::Bearer));
        assert_eq!(
            places(&found)[0],
            ("token_cookie", "c"),
            "not the credential"
        );
        let headers = request(Some("Bearer b"), Some("tok=c"));
        let found = other_tokens(&headers, everything, Some(Credential::TokenCookie));
        assert_eq!(places(&found)[0], ("bearer", "b"));
        assert_eq!(places(&found).len(), 3);
    }

    #[test]
    fn what_does_not_reach_the_application_or_is_no_token_is_not_found() {
        let headers = request(Some("Basic YTpi"), Some("tok=c"));
        let nothing_configured = Reaching {
            authorization: true,
            queries: &[Cow::Borrowed("access=1&token=2&access_token=&access_token")],
            token_cookie: None,
        };
        assert_eq!(other_tokens(&headers, nothing_configured, None), []);
        let removed = Reaching {
            authorization: false,
            queries: &[],
            token_cookie: None,
        };
        let headers = request(Some("Bearer b"), None);
        assert_eq!(other_tokens(&headers, removed, None), []);
    }

    #[test]
    fn a_malformed_bearer_header_is_found_without_a_token() {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_bytes(b"Bearer \xff").unwrap();
        headers.insert(header::AUTHORIZATION, value);
        let reaching = Reaching {
            authorization: true,
            queries: &[],
            token_cookie: None,
        };
        let found = other_tokens(&headers, reaching, Some(Credential::SessionCookie));
        assert_eq!(places(&found), [("bearer", "")], "refused when checked");
    }

    #[test]
    fn a_query_token_is_found_under_every_name_an_application_reads_as_access_token() {
        let tokens = |query| query_tokens(query).collect::<Vec<String>>();
        for query in [
            "access_token=t",
            "Access_Token=t",
            "ACCESS_TOKEN=t",
            "access%5Ftoken=t",
            "access%5ftoken=t",
            "access.token=t",
            "access+token=t",
            "access%20token=t",
            "access[token=t",
            "a=1;access_token=t",
            "%61ccess_token=t",
            "+access_token=t",
            "%20access_token=t",
            "access_token%00x=t",
            "[access_token]=t",
            "]access_token=t",
            "[]access_token=t",
            "access_token[]=t",
            "access_token[0]=t",
            "access[token=t",
        ] {
            assert_eq!(tokens(query), ["t"], "{query}");
        }
        assert_eq!(tokens("access_token=a%2Bb+c"), ["a+b c"], "form-decoded");
        for query in [
            "",
            "a=1",
            "access_token=",
            "access_token",
            "token=t",
            "access_tokens=t",
        ] {
            assert_eq!(tokens(query), Vec::<String>::new(), "{query}");
        }
    }

    #[test]
    fn the_same_caller_is_the_same_subject() {
        let claims = |value: serde_json::Value| -> Claims {
            std::sync::Arc::new(value.as_object().unwrap().clone())
        };
        let alice = claims(serde_json::json!({"sub": "alice", "scope": "a"}));
        let alice_again = claims(serde_json::json!({"sub": "alice"}));
        let bob = claims(serde_json::json!({"sub": "bob"}));
        let nobody = claims(serde_json::json!({}));
        assert!(same_caller(&alice, &alice_again));
        assert!(!same_caller(&alice, &bob));
        assert!(!same_caller(&nobody, &nobody), "no subject is nobody's");
        let elsewhere = claims(serde_json::json!({"sub": "alice", "iss": "https://other"}));
        let here = claims(serde_json::json!({"sub": "alice", "iss": "https://here"}));
        assert!(!same_caller(&here, &elsewhere), "another issuer's alice");
        assert!(same_caller(&here, &alice), "an issuer on one side only");
    }
}
