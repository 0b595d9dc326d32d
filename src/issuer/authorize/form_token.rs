//! The login form's token, asked of every post of credentials: for browsers that do not say
//! where a post comes from (no Fetch Metadata: Safari before 16.4, older Chrome and Firefox),
//! and for pages on the issuer's own origin. The form carries a random token
//! that a cookie of this host holds too (`SameSite=Lax`, and `__Host-` over https, so no
//! other host can set it); a post whose token is not its cookie's gets the form again. A page
//! of another site can make a browser post the form with the attacker's password (login CSRF:
//! the victim then uses the client as the attacker), but cannot read the cookie, and the
//! browser sends no `Lax` cookie with a cross-site post. `Lax`, not `Strict`: the form is
//! reached by a cross-site redirect from the client, which carries a `Lax` cookie, so the
//! browser's token is kept, and every open form of the browser shares it. Over plain http a
//! sibling subdomain can set the cookie for the whole site: the defence holds over https. A
//! browser that says the post comes from this origin (`Sec-Fetch-Site`) needs the token too: a
//! page of an application served on the issuer's origin is `same-origin`, and its HTML alone
//! could post the form.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

/// The form field that carries the token.
pub(super) const FIELD: &str = "form_token";

/// A login form's token, and the cookie that sets it when it is new.
pub(super) struct FormToken {
    value: String,
    set_cookie: Option<HeaderValue>,
}

/// The cookie's name: `__Host-` over https, where a browser keeps such a cookie to this host.
fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-tollgate_form"
    } else {
        crate::http::cookies::FORM_TOKEN_COOKIE
    }
}

/// Whether `value` is a token this service made (43 base64url characters).
fn well_formed(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// The token a request's cookie holds, when it is one this service made.
fn sent(headers: &HeaderMap, secure: bool) -> Option<&str> {
    crate::http::cookies::request_cookies(headers)
        .get(cookie_name(secure))
        .copied()
        .filter(|value| well_formed(value))
}

impl FormToken {
    /// The token for a form shown in answer to `headers`: the browser's, when it holds one
    /// (every open form of the browser shares it), else a new one, set with the form.
    pub(super) fn for_form(headers: &HeaderMap, secure: bool) -> Self {
        if let Some(value) = sent(headers, secure) {
            return Self {
                value: value.to_owned(),
                set_cookie: None,
            };
        }
        let value = crate::random::token();
        let attributes = if secure {
            "; Path=/; Secure; HttpOnly; SameSite=Lax"
        } else {
            "; Path=/; HttpOnly; SameSite=Lax"
        };
        let set_cookie =
            HeaderValue::from_str(&format!("{}={value}{attributes}", cookie_name(secure))).ok();
        Self { value, set_cookie }
    }

    /// Whether a post's `field` (the form's token) is the token its cookie holds.
    pub(super) fn posted(headers: &HeaderMap, field: Option<&str>, secure: bool) -> bool {
        match (sent(headers, secure), field) {
            (Some(cookie), Some(field)) => {
                crate::secret::constant_time_eq(cookie.as_bytes(), field.as_bytes())
            }
            _ => false,
        }
    }

    /// Whether the request this token answers sent none (the browser had no cookie of the
    /// form, or does not keep this host's cookies).
    pub(super) fn is_new(&self) -> bool {
        self.set_cookie.is_some()
    }

    /// The token, for the form's hidden field.
    pub(super) fn value(&self) -> &str {
        &self.value
    }

    /// Sets the token's cookie on `response` when it is new.
    pub(super) fn set_on(&self, response: &mut Response) {
        if let Some(cookie) = &self.set_cookie {
            response
                .headers_mut()
                .append(header::SET_COOKIE, cookie.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_cookie_is_tollgates_under_either_name() {
        assert_eq!(
            cookie_name(true),
            format!("__Host-{}", crate::http::cookies::FORM_TOKEN_COOKIE)
        );
    }

    fn with_cookie(cookie: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        headers
    }

    #[test]
    fn a_new_token_is_set_and_a_sent_one_is_kept() {
        let new = FormToken::for_form(&HeaderMap::new(), true);
        let cookie = new.set_cookie.as_ref().unwrap().to_str().unwrap();
        assert!(
            cookie.starts_with(&format!(
                "__Host-tollgate_form={}; Path=/; Secure;",
                new.value()
            )),
            "{cookie}"
        );
        assert!(cookie.ends_with("SameSite=Lax"), "{cookie}");
        let kept = FormToken::for_form(
            &with_cookie(&format!("__Host-tollgate_form={}", new.value())),
            true,
        );
        assert_eq!(kept.value(), new.value());
        assert!(kept.set_cookie.is_none());
        let plain = FormToken::for_form(&HeaderMap::new(), false);
        let cookie = plain.set_cookie.as_ref().unwrap().to_str().unwrap();
        assert!(
            cookie.starts_with("tollgate_form=") && !cookie.contains("Secure"),
            "{cookie}"
        );
    }

    #[test]
    fn a_post_needs_its_cookies_token_in_the_form() {
        let token = crate::random::token();
        let headers = with_cookie(&format!("__Host-tollgate_form={token}"));
        assert!(FormToken::posted(&headers, Some(&token), true));
        let other = crate::random::token();
        assert!(
            !FormToken::posted(&headers, Some(&other), true),
            "another token"
        );
        assert!(!FormToken::posted(&headers, None, true), "no field");
        assert!(
            !FormToken::posted(&HeaderMap::new(), Some(&token), true),
            "no cookie"
        );
        assert!(
            !FormToken::posted(
                &with_cookie(&format!("tollgate_form={token}")),
                Some(&token),
                true
            ),
            "over https, only the __Host- cookie counts"
        );
        assert!(
            !FormToken::posted(&with_cookie("__Host-tollgate_form=x"), Some("x"), true),
            "not a token this service made"
        );
    }
}
