//! Where a user may be sent after login or logout (`rd`). A target is allowed when it is a
//! plain relative path or an http(s) URL whose host is in `allowed_redirect_domains`. Pure
//! functions: no IO.

use std::str::FromStr;

use url::Url;

/// One entry of `server.allowed_redirect_domains`: `host`, `.suffix` or either with `:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedRedirectDomain {
    host: String,
    suffix: bool,
    port: Option<u16>,
}

impl FromStr for AllowedRedirectDomain {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lowered = text.trim().to_ascii_lowercase();
        let (suffix, rest) = match lowered.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, lowered.as_str()),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("`{text}` has an invalid port"))?;
                (host, Some(port))
            }
            _ => (rest, None),
        };
        let valid = !host.is_empty()
            && host
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b".-[]:".contains(&byte))
            && !host.starts_with('.')
            && !host.ends_with('.');
        if !valid {
            return Err(format!(
                "`{text}` is not a host, a .suffix, or either with :port"
            ));
        }
        // `.com` would allow a redirect to any host of a top-level domain; names kept off the
        // public Internet (RFC 6761, RFC 6762, ICANN's `.internal`, and the usual intranet
        // ones) may stand alone.
        const PRIVATE: [&str; 7] = [
            "localhost",
            "internal",
            "lan",
            "local",
            "test",
            "corp",
            "home",
        ];
        if suffix && !host.contains('.') && !PRIVATE.contains(&host) {
            return Err(format!(
                "`{text}` is a suffix of one label, which allows every host under a top-level \
                 domain: name your own domain (`.example.com`)"
            ));
        }
        if suffix && is_public_suffix(host) {
            return Err(format!(
                "`{text}` is a public suffix, under which anyone may have a site (the Public \
                 Suffix List: `.co.uk`, `.github.io`, `.herokuapp.com`): name your own \
                 (`.example.co.uk`, `myorg.github.io`)"
            ));
        }
        Ok(Self {
            host: host.to_owned(),
            suffix,
            port,
        })
    }
}

/// Whether `host` is on the Public Suffix List (ICANN's section or the private one, where
/// hosting services list the domains their users publish under), or every name under it is
/// (a wildcard rule such as `*.compute.amazonaws.com`): a `.suffix` entry of such a host lets
/// `rd` point at sites other people run.
fn is_public_suffix(host: &str) -> bool {
    let listed = |name: &str| {
        psl::suffix(name.as_bytes())
            .is_some_and(|found| found.is_known() && found.as_bytes() == name.as_bytes())
    };
    listed(host) || listed(&format!("a.{host}"))
}

impl AllowedRedirectDomain {
    /// An entry allowing exactly this URL's host and port (used for `public_url`).
    pub fn exact_for(url: &Url) -> Option<Self> {
        Some(Self {
            host: url.host_str()?.to_ascii_lowercase(),
            suffix: false,
            port: url.port_or_known_default(),
        })
    }

    /// Whether this entry allows `host` (lower case) on `port`. A `.suffix` entry allows no
    /// host whose public suffix lies below it: `.amazonaws.com` is no public suffix, but
    /// `s3.amazonaws.com` under it is, and a bucket there is anyone's site.
    pub fn allows(&self, host: &str, port: Option<u16>) -> bool {
        let host_matches = if self.suffix {
            host == self.host
                || (host
                    .strip_suffix(self.host.as_str())
                    .is_some_and(|head| head.ends_with('.'))
                    && psl::suffix(host.as_bytes())
                        .is_none_or(|public| public.as_bytes().len() <= self.host.len()))
        } else {
            host == self.host
        };
        host_matches && self.port.is_none_or(|wanted| Some(wanted) == port)
    }
}

/// Why a redirect target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    /// Control characters, whitespace, backslashes or encoded separators.
    #[error("redirect target contains forbidden characters")]
    ForbiddenCharacters,
    /// Neither a plain relative path nor an absolute http(s) URL.
    #[error("redirect target is not a relative path or an http(s) URL")]
    NotAUrl,
    /// An absolute URL whose host is not allowed.
    #[error("redirect target host is not in allowed_redirect_domains")]
    HostNotAllowed,
}

/// The longest return target a login keeps: it travels sealed in a login-state cookie, which
/// must stay well below a browser's 4 KB per cookie and, with the others a browser holds,
/// below a proxy's limit on the `Cookie` header (nginx: 8 KB).
pub const MAX_RETURN_LENGTH: usize = 2048;

/// A validated target as a login keeps it to return to: as it is when it is at most
/// [`MAX_RETURN_LENGTH`] bytes as the login state holds it (JSON, where a `"` takes two),
/// else without its query and fragment (the page, if not the exact view), else the root of
/// its origin (`/` for a relative one). A long URL is no reason to refuse a login.
pub fn kept_for_return(target: String) -> String {
    let held = |text: &str| serde_json::to_string(text).map_or(usize::MAX, |json| json.len() - 2);
    if held(&target) <= MAX_RETURN_LENGTH {
        return target;
    }
    let page = target.split(['?', '#']).next().unwrap_or("/");
    if held(page) <= MAX_RETURN_LENGTH && !page.is_empty() {
        return page.to_owned();
    }
    match Url::parse(&target) {
        Ok(url) if !target.starts_with('/') => format!("{}/", url.origin().ascii_serialization()),
        _ => "/".to_owned(),
    }
}

/// Checks a redirect target and returns it in normalised form.
///
/// # Errors
/// A `RedirectError` for anything that could lead off the allowed hosts, including
/// `//evil.com`, `/\evil.com`, `https:evil.com`, `user@evil.com`, percent-encoded slashes or
/// backslashes, and control characters or whitespace anywhere.
///
/// # Security
/// This is the open-redirect guard: callers must send users only to what it returns.
pub fn validate_redirect(
    target: &str,
    allowed: &[AllowedRedirectDomain],
) -> Result<String, RedirectError> {
    if target.is_empty() || has_forbidden_characters(target) {
        return Err(RedirectError::ForbiddenCharacters);
    }
    if target.starts_with('/') {
        // Decode once and check again: a later hop may decode `%2F%2Fevil.com` into `//evil.com`.
        let decoded = percent_encoding::percent_decode_str(target)
            .decode_utf8()
            .map_err(|_| RedirectError::ForbiddenCharacters)?;
        if has_forbidden_characters(&decoded) {
            return Err(RedirectError::ForbiddenCharacters);
        }
        if is_plain_path(target) && is_plain_path(&decoded) {
            return Ok(target.to_owned());
        }
        return Err(RedirectError::NotAUrl);
    }
    let lowered_scheme = target
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if !(lowered_scheme.starts_with("http://") || lowered_scheme.starts_with("https://")) {
        // `https:evil.com`, `user@evil.com`, `javascript:…` and bare hosts all end here.
        return Err(RedirectError::NotAUrl);
    }
    let url = Url::parse(target).map_err(|_| RedirectError::NotAUrl)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(RedirectError::HostNotAllowed);
    }
    let host = url
        .host_str()
        .ok_or(RedirectError::NotAUrl)?
        .to_ascii_lowercase();
    let port = url.port_or_known_default();
    if allowed.iter().any(|domain| domain.allows(&host, port)) {
        Ok(url.to_string())
    } else {
        Err(RedirectError::HostNotAllowed)
    }
}

fn has_forbidden_characters(text: &str) -> bool {
    text.chars()
        .any(|character| character.is_control() || character.is_whitespace() || character == '\\')
}

/// A relative path that a browser cannot read as protocol-relative: `/x`, never `//x` or `/\x`.
fn is_plain_path(path: &str) -> bool {
    let mut bytes = path.bytes();
    bytes.next() == Some(b'/') && !matches!(bytes.next(), Some(b'/' | b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<AllowedRedirectDomain> {
        [".example.com", "app.example.org:8443"]
            .iter()
            .map(|entry| entry.parse().unwrap())
            .collect()
    }

    #[track_caller]
    fn check(target: &str, expected: Result<&str, RedirectError>) {
        assert_eq!(
            validate_redirect(target, &allowed()),
            expected.map(str::to_owned),
            "target {target:?}"
        );
    }

    #[test]
    fn relative_paths_are_allowed() {
        check("/", Ok("/"));
        check("/app/page?x=1#top", Ok("/app/page?x=1#top"));
    }

    #[test]
    fn a_login_keeps_a_long_target_without_its_query_or_else_the_root() {
        let longest = format!("/{}", "x".repeat(MAX_RETURN_LENGTH - 1));
        assert_eq!(kept_for_return(longest.clone()), longest);
        let query = format!("/dashboard?state={}", "q".repeat(MAX_RETURN_LENGTH));
        assert_eq!(kept_for_return(query), "/dashboard");
        let absolute = format!(
            "https://app.example.com/d#{}",
            "f".repeat(MAX_RETURN_LENGTH)
        );
        assert_eq!(kept_for_return(absolute), "https://app.example.com/d");
        assert_eq!(kept_for_return(format!("{longest}y")), "/");
        let long_page = format!("https://app.example.com/{}", "p".repeat(MAX_RETURN_LENGTH));
        assert_eq!(kept_for_return(long_page), "https://app.example.com/");
        // Measured as the login state holds it: a `"` is two bytes there, so a path of quotes
        // within the limit in bytes doubled the cookie past a browser's 4 KB, and the login
        // could not finish.
        let quotes = format!("/{}", "\"".repeat(MAX_RETURN_LENGTH - 1));
        assert_eq!(check_quotes(&quotes), "/");
        let half = format!("/{}", "\"".repeat(MAX_RETURN_LENGTH / 2 - 1));
        assert_eq!(check_quotes(&half), half);
    }

    fn check_quotes(target: &str) -> String {
        let kept = kept_for_return(validate_redirect(target, &[]).unwrap());
        assert!(serde_json::to_string(&kept).unwrap().len() <= MAX_RETURN_LENGTH + 2);
        kept
    }

    #[test]
    fn allowed_hosts_and_suffixes_match_on_label_boundaries() {
        check("https://a.example.com/x", Ok("https://a.example.com/x"));
        check("https://example.com/", Ok("https://example.com/"));
        check("https://EXAMPLE.COM/", Ok("https://example.com/"));
        check("HTTPS://A.Example.Com/", Ok("https://a.example.com/"));
        check(
            "https://evilexample.com/",
            Err(RedirectError::HostNotAllowed),
        );
        check(
            "https://example.com.evil.com/",
            Err(RedirectError::HostNotAllowed),
        );
    }

    #[test]
    fn a_suffix_allows_no_site_under_a_public_suffix_below_it() {
        // Neither `amazonaws.com` nor `windows.net` is a public suffix, so each may be listed;
        // `s3.amazonaws.com` and `blob.core.windows.net` below them are, and a bucket there is
        // anyone's.
        let allowed: Vec<AllowedRedirectDomain> = [".amazonaws.com", ".windows.net"]
            .iter()
            .map(|entry| entry.parse().unwrap())
            .collect();
        for target in [
            "https://evil.s3.amazonaws.com/p.html",
            "https://evil.blob.core.windows.net/p.html",
        ] {
            assert_eq!(
                validate_redirect(target, &allowed),
                Err(RedirectError::HostNotAllowed),
                "{target}"
            );
        }
        for target in ["https://console.amazonaws.com/", "https://amazonaws.com/"] {
            assert_eq!(
                validate_redirect(target, &allowed),
                Ok(target.to_owned()),
                "{target}"
            );
        }
        check("https://a.b.example.com/", Ok("https://a.b.example.com/"));
    }

    #[test]
    fn ports_are_enforced_when_listed() {
        check(
            "https://app.example.org:8443/",
            Ok("https://app.example.org:8443/"),
        );
        check(
            "https://app.example.org/",
            Err(RedirectError::HostNotAllowed),
        );
        check(
            "https://a.example.com:9999/",
            Ok("https://a.example.com:9999/"),
        );
    }

    #[test]
    fn known_open_redirect_bypasses_are_refused() {
        check("//evil.com", Err(RedirectError::NotAUrl));
        check("///evil.com", Err(RedirectError::NotAUrl));
        check("/\\evil.com", Err(RedirectError::ForbiddenCharacters));
        check("\\\\evil.com", Err(RedirectError::ForbiddenCharacters));
        check("https:evil.com", Err(RedirectError::NotAUrl));
        check("https:/evil.com", Err(RedirectError::NotAUrl));
        check("user@evil.com", Err(RedirectError::NotAUrl));
        check(
            "https://a.example.com@evil.com/",
            Err(RedirectError::HostNotAllowed),
        );
        check(
            "https://user@a.example.com/",
            Err(RedirectError::HostNotAllowed),
        );
        check("evil.com", Err(RedirectError::NotAUrl));
        check("javascript:alert(1)", Err(RedirectError::NotAUrl));
        check("/%2F%2Fevil.com", Err(RedirectError::NotAUrl));
        check("/%2f/evil.com", Err(RedirectError::NotAUrl));
        check("/%5Cevil.com", Err(RedirectError::ForbiddenCharacters));
        check("/%5cevil.com", Err(RedirectError::ForbiddenCharacters));
        check("HtTpS://evil.com", Err(RedirectError::HostNotAllowed));
        check(" /x", Err(RedirectError::ForbiddenCharacters));
        check("/x\t", Err(RedirectError::ForbiddenCharacters));
        check("/\t/evil.com", Err(RedirectError::ForbiddenCharacters));
        check(
            "/x\r\nSet-Cookie: a=b",
            Err(RedirectError::ForbiddenCharacters),
        );
        check(
            "/%0d%0aSet-Cookie:a",
            Err(RedirectError::ForbiddenCharacters),
        );
        check(
            "https://evil.com%2F@a.example.com",
            Err(RedirectError::HostNotAllowed),
        );
        check("", Err(RedirectError::ForbiddenCharacters));
    }

    #[test]
    fn bad_domain_entries_are_rejected() {
        assert!("exa mple.com".parse::<AllowedRedirectDomain>().is_err());
        assert!(
            "example.com:99999"
                .parse::<AllowedRedirectDomain>()
                .is_err()
        );
        assert!(".".parse::<AllowedRedirectDomain>().is_err());
    }
}
