//! The pages a person sees (SPEC §10): one plain, accessible template — readable on a phone,
//! no external assets, a strict Content-Security-Policy — for the login form, "signed out",
//! "access refused", "provider unreachable", "bad request", "not found" and the landing page.
//! API calls get the same answers as JSON (`negotiate`). Pure functions.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The policy of every page but the login form (which has one of its own): nothing loads,
/// nothing frames it, its only style is the inline [`STYLE`], allowed by its SHA-256 (not
/// `'unsafe-inline'`, which would let markup an escaping mistake let in style the page: CSS
/// can read a form's hidden values out by attribute selectors).
pub const POLICY: &str = "default-src 'none'; style-src 'sha256-TVldRhF/TL5uJAzQN9/E2MfXxsfwqJ+DTAk+HO0j2fs='; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The policy of a page whose form's answer redirects on to another origin (the login form to
/// the client's redirect URI, "Sign out?" to the provider's logout): `POLICY` without
/// `form-action`, which browsers apply to every redirect after the `POST` too. Such a page has
/// no markup a request can inject (every value is escaped), which is what form-action guards.
pub const FORM_POLICY: &str = "default-src 'none'; style-src 'sha256-TVldRhF/TL5uJAzQN9/E2MfXxsfwqJ+DTAk+HO0j2fs='; frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = "\
:root{color-scheme:light dark;--accent:#1a5fb4;--error:#a51d2d}\
body{font:1rem/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;padding:1.5rem}\
main{max-width:26rem;margin:3rem auto}\
h1{font-size:1.5rem;margin:0 0 1rem}\
p.brand{font-size:.85rem;letter-spacing:.08em;text-transform:uppercase;opacity:.7;margin:0 0 .5rem}\
label{display:block;margin:.8rem 0;font-weight:600}\
input{display:block;box-sizing:border-box;width:100%;margin-top:.3rem;padding:.6rem;font:inherit;\
border:1px solid #8a8a8a;border-radius:.4rem}\
button,a.button{display:inline-block;margin-top:1rem;padding:.6rem 1.2rem;font:inherit;font-weight:600;\
color:#fff;background:var(--accent);border:0;border-radius:.4rem;text-decoration:none;cursor:pointer}\
button:focus-visible,a:focus-visible,input:focus-visible{outline:3px solid var(--accent);outline-offset:2px}\
.error{color:var(--error);font-weight:600}\
code{overflow-wrap:anywhere}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #8a8a8a55;\
overflow-wrap:anywhere}";

/// A whole page: `title` (plain text) and `body` (HTML the caller has escaped).
pub fn page(title: &str, body: &str) -> String {
    let title = escape(title);
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} — Tollgate</title><style>{STYLE}</style></head>\
         <body><main><p class=\"brand\">Tollgate</p><h1>{title}</h1>{body}</main></body></html>"
    )
}

/// `page` as a response with the security headers every page carries.
pub fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let mut response = (status, axum::response::Html(page(title, body))).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    // `frame-ancestors 'none'` for browsers and web views that read no CSP level 2.
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    super::security_headers(headers);
    response
}

/// HTML-escapes text for element content and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Whether the caller is a browser that wants a page rather than a program that wants data:
/// its `Accept` names `text/html`.
pub fn wants_html(accept: Option<&HeaderValue>) -> bool {
    accept
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// Whether the caller asked for JSON (and not for a page).
pub fn wants_json(accept: Option<&HeaderValue>) -> bool {
    accept
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json") && !accept.contains("text/html"))
}

/// What a refusal says, carried on its plain-text response so that `negotiate` can render it
/// as a page or as JSON for the caller.
#[derive(Debug, Clone)]
pub struct RefusalPage {
    /// A stable, machine-readable name (`forbidden`, `provider_unavailable`, …).
    pub error: &'static str,
    /// The page's title.
    pub title: &'static str,
    /// One sentence for the person, safe to show (never a token).
    pub message: String,
}

/// Renders a response that carries a `RefusalPage` as a page for browsers or JSON for API calls;
/// plain text for everyone else (ingress controllers read only the status). Other responses
/// pass unchanged.
pub fn negotiate(accept: Option<&HeaderValue>, mut response: Response) -> Response {
    let Some(refusal) = response.extensions_mut().remove::<RefusalPage>() else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    let rendered = if wants_html(accept) {
        let body = format!("<p>{}</p>", escape(&refusal.message));
        html(parts.status, refusal.title, &body)
    } else if wants_json(accept) {
        axum::Json(serde_json::json!({
            "error": refusal.error,
            "message": refusal.message,
        }))
        .into_response()
    } else {
        parts.extensions.insert(refusal);
        return Response::from_parts(parts, body);
    };
    let (new_parts, new_body) = rendered.into_parts();
    // The refusal's own headers (WWW-Authenticate, Cache-Control, Set-Cookie…) stay; the
    // body's type, policy and framing are the page's.
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_SECURITY_POLICY,
        header::X_FRAME_OPTIONS,
    ] {
        match new_parts.headers.get(&name) {
            Some(value) => {
                parts.headers.insert(name, value.clone());
            }
            None => {
                parts.headers.remove(&name);
            }
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, new_body)
}

/// The landing page at `/` when no route claims it: what this is, and whether the visitor is
/// signed in. After a sign-out that returns to `public_url` this is the "signed out" page.
pub fn landing(signed_in: bool) -> Response {
    if signed_in {
        html(
            StatusCode::OK,
            "You are signed in",
            "<p>This is Tollgate, the sign-in gateway in front of your applications.</p>\
             <a class=\"button\" href=\"signout\">Sign out</a>",
        )
    } else {
        html(
            StatusCode::OK,
            "You are signed out",
            "<p>You have been signed out, or have not signed in yet. Applications behind this \
             gateway will ask you to sign in when you open them.</p>",
        )
    }
}

/// The page for a method an address does not answer (axum's router adds `Allow`, naming the
/// ones it does): a `GET` of the token endpoint typed into a browser, say.
pub fn method_not_allowed(method: &axum::http::Method) -> Response {
    refusal(
        StatusCode::METHOD_NOT_ALLOWED,
        RefusalPage {
            error: "method_not_allowed",
            title: "Method not allowed",
            message: format!("This address does not answer {method} requests."),
        },
    )
}

/// The page for a path nothing answers.
pub fn not_found() -> Response {
    refusal(
        StatusCode::NOT_FOUND,
        RefusalPage {
            error: "not_found",
            title: "Page not found",
            message: "There is nothing at this address.".to_owned(),
        },
    )
}

/// A refusal in plain text (`404 Not Found: There is nothing at this address.`), carrying
/// `page` for `negotiate` to render as a page or as JSON when the caller asks for one.
fn refusal(status: StatusCode, page: RefusalPage) -> Response {
    let reason = status.canonical_reason().unwrap_or_default();
    let body = format!("{} {reason}: {}\n", status.as_u16(), page.message);
    plain_refusal(status, body, page)
}

/// `body` as a plain-text, uncached refusal with the security headers, carrying `page` for
/// `negotiate`.
pub fn plain_refusal(status: StatusCode, body: String, page: RefusalPage) -> Response {
    let mut response = (status, body).into_response();
    response.extensions_mut().insert(page);
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    super::security_headers(headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both policies allow the one inline style by its hash, and no other.
    #[test]
    fn the_policies_allow_the_pages_style_by_its_hash_alone() {
        use base64::Engine as _;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, STYLE.as_bytes());
        let source = format!(
            "style-src 'sha256-{}';",
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        for policy in [POLICY, FORM_POLICY] {
            assert!(policy.contains(&source), "{policy} lacks {source}");
            assert!(!policy.contains("unsafe-inline"), "{policy}");
        }
    }
}
