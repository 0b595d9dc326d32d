//! Shared HTTP plumbing: the rejection table, forwarded headers, serving with graceful drain.

pub mod canonical;
pub mod cookies;
pub mod forwarded;
pub mod origin;
pub mod pages;
pub mod rejection;
pub mod serve;
pub mod stalled_body;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Adds `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer` to an answer of
/// Tollgate's own, unless it set them already (SPEC §10).
pub fn security_headers(headers: &mut axum::http::HeaderMap) {
    headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    headers
        .entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
}

/// Whether a header named `name` (lower case) may not carry an identity: one that frames
/// or routes the message (`Host`, `Content-Length`, `Transfer-Encoding`, hop-by-hop names)
/// or carries cookies. A route's identity header or an `/auth` injection of one would break
/// the message the ingress or the upstream reads, or set what only Tollgate sets.
pub fn cannot_carry_identity(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "cookie"
            | "set-cookie"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

/// A `302 Found` to `location` (what ingress controllers and OAuth flows expect).
pub fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
        Err(_) => rejection::Rejection::Internal.into_response(),
    }
}

/// HTTP/2 requests carry the host in `:authority`, not in a `Host` header: copy it there, so
/// every handler finds the host in one place.
pub fn host_from_authority<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    if !request.headers().contains_key(header::HOST) {
        let authority = request
            .uri()
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok());
        if let Some(value) = authority {
            request.headers_mut().insert(header::HOST, value);
        }
    }
    request
}

/// Whether a request is an API call rather than a browser navigating (SPEC §5): not GET or
/// HEAD, `X-Requested-With` set, or asking for JSON and not HTML; and, beyond SPEC, a
/// browser's request that says it is no navigation (`Sec-Fetch-Mode` other than `navigate`:
/// an image, a script, a `fetch`). API calls get a 401 where browsers are sent to log in: a
/// subresource cannot show the provider's page, so a login it began could only end silently
/// (the provider's single sign-on), making a session nobody asked for, such as right after an
/// administrator or a logout ended the last one (a page's `/favicon.ico` arriving late). A
/// navigation fetched ahead of a click (`Sec-Purpose` or `Purpose`: a prefetch, a prerender)
/// is no navigation yet: the click that follows is one, and logs in then.
pub fn is_api_call(method: &axum::http::Method, headers: &axum::http::HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let wants_json = accept.contains("application/json") && !accept.contains("text/html");
    let subresource = headers
        .get(&SEC_FETCH_MODE)
        .is_some_and(|mode| mode != "navigate" && mode != "nested-navigate");
    !(method == axum::http::Method::GET || method == axum::http::Method::HEAD)
        || wants_json
        || headers.contains_key(&X_REQUESTED_WITH)
        || subresource
        || headers.contains_key("sec-purpose")
        || headers.contains_key("purpose")
}

/// Whether what the browser says of the request (`Sec-Fetch-Mode`: an image, a script's `fetch`,
/// also one that followed a redirect there; `X-Requested-With: XMLHttpRequest`; a prefetch)
/// means it cannot show a page: a login begun for it could only end silently, or never, and
/// would push one of the browser's logins in progress out of its capped cookies. (Not
/// [`is_api_call`] whole: an Android WebView sends `X-Requested-With` with its package name
/// on its navigations.)
pub fn is_no_navigation(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(&SEC_FETCH_MODE)
        .is_some_and(|mode| mode != "navigate" && mode != "nested-navigate")
        || headers
            .get(&X_REQUESTED_WITH)
            .is_some_and(|with| with.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"))
        || headers.contains_key("sec-purpose")
        || headers.contains_key("purpose")
}

/// Whether the application may take the request for another method than its request line's
/// by a header: `X-HTTP-Method-Override`, `X-HTTP-Method` or `X-Method-Override` in any
/// spelling (Rails' `Rack::MethodOverride`, Laravel, Symfony and Express's `method-override`
/// read one). A rule that names a method cannot know the method the application acts on then.
pub fn method_override_header(headers: &axum::http::HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| is_method_override_name(name.as_str()))
}

/// Whether `name` (lower case, as header names are kept) is `X-HTTP-Method-Override`,
/// `X-HTTP-Method` or `X-Method-Override`, in any spelling.
pub fn is_method_override_name(name: &str) -> bool {
    matches!(name.as_bytes(), [b'x', b'-' | b'_' | b'.', ..])
        && [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
        ]
        .iter()
        .any(|known| same_header_name(name, known))
}

/// Whether `query` (without `?`) names another method for the application: a `_method`
/// parameter (Laravel and Symfony read it, Express's `method-override` when set up so), its
/// name read as PHP reads names into `$_GET` (leading spaces dropped, cut at a NUL, ` `, `.`
/// and `[` read as `_`: `?.method=DELETE` is `_method`), in any case. (A `_method` in a form
/// body, as Rails reads it, is not seen.)
pub fn method_override_query(query: &str) -> bool {
    url::form_urlencoded::parse(query.as_bytes()).any(|(name, _)| {
        let name = name.trim_start_matches(' ');
        let name = name.split('\0').next().unwrap_or_default();
        let read: String = name
            .chars()
            .map(|character| match character {
                ' ' | '.' | '[' => '_',
                other => other.to_ascii_lowercase(),
            })
            .collect();
        read.strip_prefix("_method")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
    })
}

/// Whether the application may take a request with these headers for another method by a
/// `_method` in its body, which is not read here: a `POST` with a form body
/// (`application/x-www-form-urlencoded` or `multipart/form-data`: Rails' `Rack::MethodOverride`,
/// Symfony and Laravel read `_method` there; any other `multipart/…`, which Rack parses too)
/// or with no `Content-Type` (Rack parses that body as a form). A rule that names a method
/// cannot know the method the application acts on then. (Laravel reads a JSON body's
/// `_method` too; see the README.)
///
/// A `Content-Type` that a `Connection` header names counts as none: a proxy between the
/// client and the application that drops the headers `Connection` names (Go's, so Caddy's and
/// Traefik's) would send the application the body without it.
pub fn method_override_body(method: &axum::http::Method, headers: &axum::http::HeaderMap) -> bool {
    if method != axum::http::Method::POST {
        return false;
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).iter().peekable();
    if types.peek().is_none() || connection_names(headers, header::CONTENT_TYPE.as_str()) {
        return true;
    }
    // The media type as Rack (up to `;` or `,`) and PHP (up to `;`, `,` or a space) read it.
    types.any(|value| {
        let media_type = value
            .as_bytes()
            .trim_ascii_start()
            .split(|&byte| matches!(byte, b';' | b',') || byte.is_ascii_whitespace())
            .next()
            .unwrap_or_default();
        media_type.eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
            || media_type
                .get(..b"multipart/".len())
                .is_some_and(|start| start.eq_ignore_ascii_case(b"multipart/"))
            || media_type.is_empty()
    })
}

/// Whether a `Connection` header of `headers` names the header `name` (lower case).
fn connection_names(headers: &axum::http::HeaderMap, name: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .any(|word| word.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

/// Whether `byte` may be part of an HTTP token (RFC 9110 §5.6.2 `tchar`).
pub fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Whether `text` is an HTTP token: one `tchar` or more.
pub fn is_token(text: &[u8]) -> bool {
    !text.is_empty() && text.iter().all(|&byte| is_token_byte(byte))
}

/// A parameter's value at the start of `text` and what follows it: a quoted string with `\`
/// escapes, quotes included (RFC 9110 §5.6.4), or a run up to `,` or white space (a token,
/// or what a lenient writer puts there: AWS's `Credential=AKID/…/aws4_request`); `None` when
/// a quoted string does not end.
pub fn parameter_value(text: &[u8]) -> Option<(&[u8], &[u8])> {
    if text.first() != Some(&b'"') {
        let end = text
            .iter()
            .position(|&byte| byte == b',' || byte.is_ascii_whitespace())
            .unwrap_or(text.len());
        return Some(text.split_at(end));
    }
    let mut at = 1;
    loop {
        match *text.get(at)? {
            b'"' => return Some(text.split_at(at + 1)),
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
}

/// Whether a backend could take a header named `name` (in lower case) for an identity header
/// of a gateway Tollgate replaces: oauth2-proxy's `X-Forwarded-User` and `X-Auth-Request-*`,
/// mod_auth_openidc's `OIDC_CLAIM_*` and `OIDC_access_token`, kong-oidc's `X-Userinfo`, Kong's
/// `X-Consumer-*`, Authelia's `Remote-*`, Authentik's `X-authentik-*`, Pomerium's
/// `X-Pomerium-*`, Azure App Service's `X-MS-CLIENT-PRINCIPAL*`, Google IAP's
/// `X-Goog-Authenticated-User-*`, Vouch's `X-Vouch-*`, Cloudflare Access's `Cf-Access-*`. An
/// application moved behind Tollgate may still read them; whoever sends one, it never comes
/// from Tollgate unless a route's `headers` names it (set afterwards).
pub fn is_identity_elsewhere(name: &str) -> bool {
    let starts = |prefix: &str| {
        name.get(..prefix.len())
            .is_some_and(|start| same_header_name(start, prefix))
    };
    match name.as_bytes() {
        [b'x', b'-' | b'_' | b'.', ..] => {
            [
                "x-forwarded-user",
                "x-forwarded-email",
                "x-forwarded-groups",
                "x-forwarded-preferred-username",
                "x-forwarded-access-token",
                "x-userinfo",
                "x-access-token",
                "x-id-token",
                "x-remote-user",
                "x-credential-identifier",
                "x-anonymous-consumer",
            ]
            .iter()
            .any(|known| same_header_name(name, known))
                || [
                    "x-auth-request-",
                    "x-consumer-",
                    "x-authenticated-",
                    "x-authentik-",
                    "x-pomerium-",
                    "x-ms-client-principal",
                    "x-ms-token-",
                    "x-goog-authenticated-user-",
                    "x-goog-iap-",
                    "x-vouch-",
                ]
                .iter()
                .any(|prefix| starts(prefix))
        }
        [b'o', b'i', b'd', b'c', b'-' | b'_' | b'.', ..] => true,
        [b'r', ..] => starts("remote-"),
        [b'c', b'f', ..] => starts("cf-access-"),
        _ => false,
    }
}

/// Whether two header names read the same to a backend that ignores case and reads `_` as `-`
/// (CGI's `HTTP_X_USER`, PHP, Rack, Django, many WSGI servers), or `.` as `_` and so as `-`
/// (PHP names its `$_SERVER` variables so, and Caddy's `php_fastcgi` and FrankenPHP keep a
/// header's `.` in the variable they hand it: `X.User` is PHP's `HTTP_X_USER`).
pub fn same_header_name(left: &str, right: &str) -> bool {
    let normal = |byte: u8| {
        if byte == b'_' || byte == b'.' {
            b'-'
        } else {
            byte.to_ascii_lowercase()
        }
    };
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .all(|(a, b)| normal(a) == normal(b))
}

/// `bytes` as text when they are UTF-8, checked with SIMD (`simdutf8`): a session cookie or a
/// bearer token runs to kilobytes on every request, and the standard library's check costs
/// half an instruction a byte there (1,500 for a 3 KB cookie).
pub fn utf8(bytes: &[u8]) -> Option<&str> {
    simdutf8::basic::from_utf8(bytes).ok()
}

/// The headers a shared cache reads before `Cache-Control` (RFC 9213 and CDN vendors' own;
/// nginx's `X-Accel-Expires`, which its `proxy_cache` obeys over `Cache-Control`): an answer
/// that carries a session's `Set-Cookie` removes them (the proxy role) or overwrites them
/// (Envoy, which can only replace: `no-store`, and `0` for nginx's, which takes seconds),
/// beside `Cache-Control: private, no-store`, so no shared cache stores one person's session
/// for another, whatever the upstream allowed.
pub const CDN_CACHE_CONTROLS: [&str; 5] = [
    "cdn-cache-control",
    "cloudflare-cdn-cache-control",
    "surrogate-control",
    "edge-control",
    "x-accel-expires",
];

/// `X-Request-Id`. Named once: a lookup by text would parse and check the name on every
/// request (about 400 instructions, a sixtieth of a cached `/auth`).
pub static X_REQUEST_ID: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-request-id");

/// `X-Requested-With`, named once like [`X_REQUEST_ID`].
pub static X_REQUESTED_WITH: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-requested-with");

/// `Sec-Fetch-Mode` (Fetch Metadata), named once like [`X_REQUEST_ID`].
pub static SEC_FETCH_MODE: axum::http::HeaderName =
    axum::http::HeaderName::from_static("sec-fetch-mode");

/// The request's `X-Request-Id` (set by ingress-nginx, Envoy and others), for its decision
/// log line: the client's text, which the line bounds and escapes.
pub fn request_id(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
}
