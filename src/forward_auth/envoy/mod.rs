//! Envoy's `ext_authz` (SPEC §4): the `/auth` decision for a request Envoy describes, asked
//! over gRPC (`grpc`, `envoy.service.auth.v3.Authorization/Check` on `grpc_listen`) or over
//! HTTP (`http`, `/envoy/<original path>` on the public listener). Both run
//! `forward_auth::decide_auth` and report through `forward_auth::report`; this module only
//! translates Envoy's request in and the outcome out.

pub mod grpc;
pub mod http;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::{ForwardAuthState, Outcome, parsed_query};
use crate::http::forwarded::OriginalRequest;
use crate::http::rejection::{Refusal, Rejection};

/// The header names Envoy removes from the client's request before the upstream sees it: each
/// name the rules inject that this allowed answer does not carry (an absent claim, or a skip
/// rule that ran no checks), and every other spelling of an injected name that the client sent
/// (`x_email` beside `x-email`: Envoy passes underscores on by default, and an application
/// reading headers the CGI way takes both for `HTTP_X_EMAIL`), and every identity header of
/// the gateways Tollgate replaces that the client sent (`X-Forwarded-User`,
/// `X-Auth-Request-Email`, `OIDC_CLAIM_*`: an application moved from oauth2-proxy may still
/// read them, as the proxy role removes them) unless these rules inject it. So no copy the
/// client sent reaches the upstream as if Tollgate had vouched for it.
///
/// And what an application may read as another path or host than the one Envoy chose the
/// route, and so the rules, by ([`OTHER_READINGS`]: Symfony's `X-Original-URL`, Yii's
/// `X-Rewrite-URL`, Rack's `Forwarded`), in every spelling sent, and `X-Forwarded-Host`
/// (Rails, Django) when it names another host than the request's: where `every_header_seen`
/// is false (the HTTP variant sees only the recipe's `allowed_headers`), whatever it says.
fn headers_to_remove(
    state: &ForwardAuthState,
    rules: &str,
    outcome: &Outcome,
    sent: &HeaderMap,
    every_header_seen: bool,
) -> Vec<HeaderName> {
    let injected: &[(HeaderName, axum::http::HeaderValue)] = match outcome {
        Outcome::Allow(injected, _, _) => injected,
        Outcome::Skip => &[],
        Outcome::Redirect(_) | Outcome::Reject(..) => return Vec::new(),
    };
    // The rules parsed already (the decision checks them first), so this is a cache hit for
    // any rules short enough to be kept.
    let Ok(query) = parsed_query(state, rules, false) else {
        return Vec::new();
    };
    let mut names: Vec<HeaderName> = sent
        .keys()
        .filter(|name| {
            crate::http::is_identity_elsewhere(name.as_str())
                && !injected.iter().any(|(present, _)| present == *name)
                || OTHER_READINGS
                    .iter()
                    .any(|other| crate::http::same_header_name(name.as_str(), other))
        })
        .cloned()
        .collect();
    for other in OTHER_READINGS {
        let name = HeaderName::from_static(other);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    // Whoever sent it: Envoy routes by `Host`, and what the hop before it was cannot be told
    // (without `use_remote_address`, Istio's sidecars among them, `X-Forwarded-For` is all the
    // client's).
    let host = sent
        .get(axum::http::header::HOST)
        .map(HeaderValue::as_bytes);
    for (name, value) in sent {
        if crate::http::same_header_name(name.as_str(), "x-forwarded-host")
            && host.is_none_or(|host| !host.eq_ignore_ascii_case(value.as_bytes().trim_ascii()))
            && !names.contains(name)
        {
            names.push(name.clone());
        }
    }
    if !every_header_seen {
        let name = HeaderName::from_static("x-forwarded-host");
        if !names.contains(&name) {
            names.push(name);
        }
    }
    for injection in &query.injections {
        let name = injection.header();
        if !injected.iter().any(|(present, _)| present == name) && !names.contains(name) {
            names.push(name.clone());
        }
        for other in sent.keys() {
            if other != name
                && crate::http::same_header_name(other.as_str(), name.as_str())
                && !names.contains(other)
            {
                names.push(other.clone());
            }
        }
    }
    names
}

/// Headers an application may read as another path or host than the request line's and
/// `Host` (SPEC §4.1), which Envoy passes on as the client sent them: removed from every
/// allowed request (`headers_to_remove`), as the proxy role removes them (`Forwarded` and
/// `proxy::headers::PATH_OVERRIDES`).
const OTHER_READINGS: [&str; 5] = {
    let [url, uri, forwarded_uri, rewrite] = crate::proxy::headers::PATH_OVERRIDES;
    ["forwarded", url, uri, forwarded_uri, rewrite]
};

/// Whether rules that were sent hold none: blank, or only `&` between blanks (a template that
/// expanded to nothing). Read as no rules they would let every signed-in caller through.
fn holds_no_rule(rules: &str) -> bool {
    rules.split('&').all(|piece| piece.trim_ascii().is_empty())
}

/// A refusal (400) of a request that sent two `Authorization` headers, which Envoy describes
/// as one, their values joined with `,` (unless `encode_raw_headers` keeps them apart): so the
/// "two Authorization headers" refusal never ran, and a `Basic` credential first hid a
/// `Bearer` token after it from every check, while Envoy passes both headers on and an
/// application may take the second. A value with a `,` is one credential only as a strict list
/// of parameters (see [`is_one_credential`]); anything else is such a pair.
fn joined_credentials(headers: &HeaderMap) -> Option<Outcome> {
    let joined = headers
        .get_all(axum::http::header::AUTHORIZATION)
        .iter()
        .any(|value| !is_one_credential(value.as_bytes()));
    joined.then(|| {
        let reason = "two Authorization headers (Envoy describes them as one, joined with `,`)";
        Outcome::Reject(Refusal::new(
            Rejection::InvalidRequest(reason.to_owned()),
            reason,
        ))
    })
}

/// A refusal (400) of a request that sent two `Cookie` headers, the second holding a cookie
/// read as `token_cookie`: Envoy joins them with `,`, so that token hid in the first header's
/// last value from the "two token cookies" refusal and every check, while the application
/// behind reads both headers (Django keeps the last of two cookies of a name).
fn joined_token_cookies(state: &ForwardAuthState, headers: &HeaderMap) -> Option<Outcome> {
    let token_cookie = state.forward_auth()?.0.token_cookie.as_deref()?;
    crate::identity::token_cookie_after_a_comma(headers, token_cookie).then(|| {
        let reason = "a token cookie after a `,` in a Cookie header (Envoy joins two Cookie \
                      headers with `,`)";
        Outcome::Reject(Refusal::new(
            Rejection::InvalidRequest(reason.to_owned()),
            reason,
        ))
    })
}

/// Whether `value` can only be one credential: it has no `,` (every join has one), or it is
/// a scheme, white space and a list of `name=value` parameters (Digest, AWS SigV4) written strictly: no
/// white space around `=`, and each value either a quoted string without `,` or a run of
/// visible ASCII other than `,` and `"` that does not start with `=`. Stricter than RFC 9110
/// §11.4 on purpose: what passes leaves no second header a reader could split a token out of
/// (`Digest a="` then `Bearer X "`, `Bearer = X`, `x=Bearer\xa0X`, a token68's `==`).
fn is_one_credential(value: &[u8]) -> bool {
    if !value.contains(&b',') {
        return true;
    }
    let value = value.trim_ascii();
    let scheme = value
        .iter()
        .take_while(|&&byte| crate::http::is_token_byte(byte))
        .count();
    let rest = &value[scheme..];
    scheme > 0 && matches!(rest.first(), Some(b' ' | b'\t')) && are_parameters(rest)
}

/// Whether `text` is a strict list of `name=value` parameters (see [`is_one_credential`]),
/// empty elements allowed.
fn are_parameters(mut text: &[u8]) -> bool {
    loop {
        text = text.trim_ascii_start();
        while let Some(after) = text.strip_prefix(b",") {
            text = after.trim_ascii_start();
        }
        if text.is_empty() {
            return true;
        }
        let name = text
            .iter()
            .take_while(|&&byte| crate::http::is_token_byte(byte))
            .count();
        let Some(after) = text[name..].strip_prefix(b"=") else {
            return false;
        };
        let Some((value, after)) = crate::http::parameter_value(after) else {
            return false;
        };
        let strict = match value {
            [b'"', quoted @ ..] => !quoted.contains(&b','),
            [first, ..] => {
                *first != b'='
                    && value
                        .iter()
                        .all(|&byte| byte.is_ascii_graphic() && byte != b',' && byte != b'"')
            }
            [] => false,
        };
        if name == 0 || !strict {
            return false;
        }
        text = after.trim_ascii_start();
        if !(text.is_empty() || text.starts_with(b",")) {
            return false;
        }
    }
}

/// A refusal (400) of a request whose path Envoy and the application may read apart from
/// Tollgate, or `None` when its path is already canonical (SPEC §4.1). Envoy picks its route,
/// and with it the route's rules, on the path as sent unless `normalize_path` and
/// `merge_slashes` are on: `/%61dmin/users`, `//admin/users` or `/x/../admin/users` miss a
/// `/admin/` route for the rules of `/`, while the application serves `/admin/users`; so does
/// `/admin;x/users` for an application that drops `;` parameters (Tomcat, Jetty, Spring). No
/// reading of such a path is decided on.
fn unreadable_path(original: &OriginalRequest) -> Option<Outcome> {
    let reason = match original.raw_path.as_deref() {
        None => "the path is not origin-form",
        Some(target) => {
            let path = target.split_once('?').map_or(target, |(path, _)| path);
            match crate::http::canonical::canonical_path(path) {
                Err(_) => "the path has no single reading",
                Ok(canonical) if !canonical.eq_ignore_ascii_case(path) => {
                    "the path is not in canonical form (turn on Envoy's normalize_path and merge_slashes)"
                }
                Ok(_) if crate::http::canonical::holds_parameters(path) => {
                    "the path holds ; parameters"
                }
                Ok(_) => return None,
            }
        }
    };
    Some(Outcome::Reject(Refusal::new(
        Rejection::BadRequest(reason.to_owned()),
        reason,
    )))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    fn joined(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        super::joined_credentials(&headers).is_some()
    }

    #[test]
    fn a_second_credential_after_a_comma_is_a_second_header() {
        assert!(joined(&["Basic eDp5,Bearer forged"]));
        assert!(joined(&["Basic eDp5, Bearer forged"]));
        assert!(joined(&["Bearer a,\tToken b"]));
        assert!(joined(&["Digest username=\"a\", realm=\"r\", Bearer x"]));
        // Without a scheme, or one set apart by what only some read as a space.
        assert!(joined(&["Basic eDp5,eyJ.eyJ.sig"]));
        let latin1 = HeaderValue::from_bytes(b"Digest a=b,x=Bearer\xa0forged").unwrap();
        let mut headers = HeaderMap::new();
        headers.append(header::AUTHORIZATION, latin1);
        assert!(super::joined_credentials(&headers).is_some());
        // A quote spanning the join, white space around `=`, a token68's padding read as a
        // parameter, an empty second header after a token68.
        assert!(joined(&["Basic \",Bearer forged"]));
        assert!(joined(&["Basic \",Bearer forged \""]));
        assert!(joined(&["Digest a=\",Bearer forged \""]));
        assert!(joined(&["Basic a=\",Bearer forged \""]));
        assert!(joined(&["Digest a=b,Bearer = forged"]));
        assert!(joined(&["Digest a=b,c2VjcmV0a2V5=="]));
        assert!(joined(&["Digest a=b,x=y Bearer forged"]));
        assert!(joined(&["Bearer a,"]));
        // Stricter than one credential's grammar on purpose: a quoted value holding a `,`
        // could be a quote spanning the join (`encode_raw_headers` keeps such apart).
        assert!(joined(&["Digest username=\"a\", uri=\"/items/1,2\""]));
        // One credential: no comma at all, whatever its shape, or a strict parameter list.
        assert!(!joined(&["Bearer eyJ.eyJ.sig"]));
        assert!(!joined(&["Basic eDp5"]));
        assert!(!joined(&["AWS AKIDEXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg="]));
        assert!(!joined(&["eyJ.eyJ.sig"]));
        assert!(!joined(&[
            "Negotiate YIIBnwYGKwYBBQUCoIIBkzCCAY+gJDAiBgkqhkiC9xIBAgIGCSqGSIb3EgE="
        ]));
        assert!(!joined(&[
            "Digest username=\"alice\", realm=\"Example Inc\", nonce=\"dcd98b\", \
             uri=\"/dir/index.html\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", \
             response=\"6629fae4\""
        ]));
        assert!(!joined(&[
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b1316"
        ]));
        assert!(!joined(&["Digest a=b,"]));
        assert!(!joined(&[]));
    }
}
