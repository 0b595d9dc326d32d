//! Whether a sign-out (`/signout`, a route's `/logout`) is the user's own request, read from
//! the browser's Fetch Metadata (`Sec-Fetch-*`), and the "Sign out?" page shown when it may not
//! be: another site's link or script, or an image that someone posted into an application
//! (`<img src="/logout">`), would otherwise end the session and, with `id_token_hint`, the
//! provider's too.

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;

/// Whether the request to sign out is the user's own:
/// - a navigation to a document (`Sec-Fetch-Mode: navigate`, `Sec-Fetch-Dest: document`) from
///   Tollgate's or the application's own origin, or typed or bookmarked (`Sec-Fetch-Site:
///   same-origin` or `none`): a `GET` the user made (`Sec-Fetch-User: ?1`: a clicked link, a
///   typed address), or a form's `POST` (the "Sign out?" page's button; HTML alone cannot post
///   a form without a click). A `GET` nobody clicked (`<meta http-equiv="refresh">` posted
///   into an application, a script's redirect) is asked about, as is every `GET` from a
///   browser that sends no `Sec-Fetch-User` (one more click; its `POST` then signs out);
/// - a script of that origin (`fetch`, `XMLHttpRequest`: mode `cors` or `same-origin`, for no
///   element: `Sec-Fetch-Dest: empty`), as a single-page application signs out; an element
///   asking in `cors` mode (`<img crossorigin>`, a web font, `<link rel=stylesheet
///   crossorigin>`, `<script type=module>`, which HTML posted into an application can hold
///   without any script) is asked about;
/// - a navigation from another origin of the same site (an application on a sibling host)
///   that the user clicked (`Sec-Fetch-User: ?1`);
/// - a request without Fetch Metadata (browsers before 2023, plain `http://` origins, which
///   browsers send none to, scripts): what it says cannot be read, so it is served as before.
///
/// Never a prefetch or prerender (`Sec-Purpose`, `Purpose`): a browser that fetches links
/// ahead of a click would sign the user out for hovering over "Sign out".
pub fn is_the_users_own(method: &Method, headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if headers.contains_key("sec-purpose") || headers.contains_key("purpose") {
        return false;
    }
    let Some(site) = text("sec-fetch-site") else {
        return true;
    };
    let mode = text("sec-fetch-mode");
    let navigation = mode.is_none_or(|mode| mode == "navigate")
        && text("sec-fetch-dest").is_none_or(|dest| dest == "document");
    let clicked = text("sec-fetch-user") == Some("?1");
    match site {
        "same-origin" | "none" => {
            (navigation && (clicked || method == Method::POST))
                || (matches!(mode, Some("cors" | "same-origin"))
                    && text("sec-fetch-dest") == Some("empty"))
        }
        "same-site" => method == Method::GET && navigation && clicked,
        _ => false,
    }
}

/// The "Sign out?" page: one button that posts the same address (its `rd` included) from
/// Tollgate's own page, which `is_the_users_own` then accepts. Its policy has no
/// `form-action`: the answer redirects on to the provider's logout, on another origin.
pub fn confirmation() -> Response {
    let mut response = crate::http::pages::html(
        StatusCode::OK,
        "Sign out?",
        "<p>Another page asked to sign you out. Nothing has changed yet.</p>\
         <form method=\"post\"><button type=\"submit\">Sign out</button></form>",
    );
    response.headers_mut().insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static(crate::http::pages::FORM_POLICY),
    );
    response
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn navigation(site: &'static str, user: bool) -> HeaderMap {
        let mut fields = vec![
            ("sec-fetch-site", site),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
        ];
        if user {
            fields.push(("sec-fetch-user", "?1"));
        }
        headers(&fields)
    }

    #[test]
    fn the_users_own_navigations_sign_out() {
        let get = |headers: &HeaderMap| is_the_users_own(&Method::GET, headers);
        assert!(get(&navigation("same-origin", true)), "a link of the page");
        assert!(get(&navigation("none", true)), "typed or bookmarked");
        assert!(
            get(&navigation("same-site", true)),
            "a sibling host's link, clicked"
        );
        assert!(
            get(&HeaderMap::new()),
            "no Fetch Metadata: served as before"
        );
        let mut confirmed = navigation("same-origin", true);
        assert!(
            is_the_users_own(&Method::POST, &confirmed),
            "the page's button"
        );
        confirmed.insert("sec-fetch-site", HeaderValue::from_static("none"));
        assert!(is_the_users_own(&Method::POST, &confirmed));
        let script = headers(&[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-dest", "empty"),
        ]);
        assert!(get(&script), "a single-page application's fetch");
        assert!(is_the_users_own(&Method::DELETE, &script));
    }

    #[test]
    fn what_another_page_asks_for_is_confirmed_first() {
        let get = |headers: &HeaderMap| is_the_users_own(&Method::GET, headers);
        assert!(!get(&navigation("cross-site", true)), "another site's link");
        assert!(!get(&navigation("same-site", false)), "a sibling's script");
        assert!(
            !get(&navigation("same-origin", false)),
            "a meta refresh posted into the application"
        );
        assert!(
            is_the_users_own(&Method::POST, &navigation("same-origin", false)),
            "the page's button, in a browser without Sec-Fetch-User"
        );
        let image = headers(&[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "no-cors"),
            ("sec-fetch-dest", "image"),
        ]);
        assert!(!get(&image), "an image posted into the application");
        // Elements that ask in `cors` mode, which HTML alone can hold.
        for dest in ["image", "font", "style", "script"] {
            let element = headers(&[
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-mode", "cors"),
                ("sec-fetch-dest", dest),
            ]);
            assert!(!get(&element), "{dest} in cors mode");
        }
        let frame = headers(&[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "iframe"),
        ]);
        assert!(!get(&frame));
        let cross_post = navigation("cross-site", true);
        assert!(!is_the_users_own(&Method::POST, &cross_post));
        let cross_script = headers(&[("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "cors")]);
        assert!(!get(&cross_script));
        let mut prefetch = navigation("same-origin", false);
        prefetch.insert("sec-purpose", HeaderValue::from_static("prefetch"));
        assert!(!get(&prefetch), "a link fetched ahead of a click");
        assert!(!get(&headers(&[("purpose", "prefetch")])));
    }
}
