//! The `/auth` query string (SPEC §4, oidc-guard compatible) parsed into claim requirements,
//! claim injections and skip rules. Every malformed parameter is an error naming it.

use std::collections::BTreeMap;

use axum::http::{HeaderName, Method};
use regex::Regex;

/// One `inject-claim` or `inject-json-claim` parameter.
#[derive(Debug, Clone)]
pub enum ClaimInjection {
    /// `inject-claim=claim[,Header-Name]`
    Claim {
        /// The claim.
        claim: String,
        /// The response header.
        header: HeaderName,
    },
    /// `inject-json-claim=Header-Name,claim,$.json.path`
    JsonPath {
        /// The response header.
        header: HeaderName,
        /// The claim holding JSON.
        claim: String,
        /// RFC 9535 path into it.
        path: serde_json_path::JsonPath,
    },
}

impl ClaimInjection {
    /// The header this injection sets.
    pub fn header(&self) -> &HeaderName {
        match self {
            Self::Claim { header, .. } | Self::JsonPath { header, .. } => header,
        }
    }
}

/// A `skip-auth` or `skip-auth-ne` rule.
#[derive(Debug, Clone)]
pub struct SkipRule {
    /// Only for this method, when given.
    pub method: Option<Method>,
    /// Matched against the canonical path (unanchored, as oidc-guard does).
    pub pattern: Regex,
    /// `skip-auth-ne`: skip when the path does NOT match.
    pub negated: bool,
}

impl SkipRule {
    /// Whether this rule lets a request with `method` and canonical `path` skip authentication.
    /// A rule naming a method never applies when the method is not known (fail closed). It
    /// must hold for every reading the application may take of the path (see
    /// [`other_readings`](crate::http::canonical::other_readings)): a `skip-auth` pattern
    /// must match all of them, a `skip-auth-ne` pattern none. A `skip-auth-ne` pattern also
    /// none of them without its format suffix (`/admin.json` is `/admin` to Rails and
    /// Spring, [`without_format`](crate::http::canonical::without_format)) or without one
    /// trailing slash (`/admin/` is `/admin` to Rails, Express, Spring and ASP.NET Core):
    /// another reading only makes its skipping rarer. A `skip-auth` pattern is not held to those (`\.js$` would
    /// match no asset).
    pub fn skips(&self, method: Option<&Method>, path: &str) -> bool {
        if let Some(wanted) = &self.method
            && method != Some(wanted)
        {
            return false;
        }
        let readings = crate::http::canonical::other_readings(path);
        let mut all = std::iter::once(path).chain(readings.iter().map(String::as_str));
        if self.negated {
            !all.any(|reading| {
                self.pattern.is_match(reading)
                    || crate::http::canonical::without_format(reading)
                        .is_some_and(|reading| self.pattern.is_match(reading))
                    || crate::http::canonical::without_trailing_slash(reading)
                        .is_some_and(|reading| self.pattern.is_match(reading))
            })
        } else {
            all.all(|reading| self.pattern.is_match(reading))
        }
    }
}

/// A parsed `/auth` query.
#[derive(Debug, Clone, Default)]
pub struct AuthQuery {
    /// claim → accepted values.
    pub claim_rules: BTreeMap<String, Vec<String>>,
    /// Headers to return on success.
    pub injections: Vec<ClaimInjection>,
    /// Rules that let a request through without checks.
    pub skip_rules: Vec<SkipRule>,
}

/// A malformed `/auth` parameter. The message names it and is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed query parameter `{parameter}`: {reason}")]
pub struct AuthQueryError {
    /// The parameter's name.
    pub parameter: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The error of a malformed `parameter`, which is quoted bounded: a name can be as long as
/// the URL (and ends up in the decision line).
fn malformed(parameter: &str, reason: impl Into<String>) -> AuthQueryError {
    AuthQueryError {
        parameter: crate::untrusted::bounded(parameter),
        reason: reason.into(),
    }
}

impl AuthQuery {
    /// Parses a raw query string (without the `?`).
    ///
    /// # Errors
    /// The first malformed parameter.
    pub fn parse(raw_query: &str) -> Result<Self, AuthQueryError> {
        Self::parse_with(raw_query, true).map(|(query, _)| query)
    }

    /// [`parse`](Self::parse), leaving out the skip rules (neither compiled nor checked): for a
    /// request whose original path is not known, where none can apply. Compiling them costs
    /// about a quarter of a millisecond a pattern, which anyone who reaches `/auth` directly
    /// could make every request pay with a query not seen before.
    ///
    /// With whether it left any out (the query is then not what `parse` makes of it).
    ///
    /// # Errors
    /// The first malformed parameter other than a skip rule.
    pub fn parse_without_skip_rules(raw_query: &str) -> Result<(Self, bool), AuthQueryError> {
        Self::parse_with(raw_query, false)
    }

    fn parse_with(raw_query: &str, skip_rules: bool) -> Result<(Self, bool), AuthQueryError> {
        let mut query = Self::default();
        let mut left_out = false;
        for piece in raw_query.split('&').filter(|piece| !piece.is_empty()) {
            let (raw_name, raw_value) = piece.split_once('=').unwrap_or((piece, ""));
            let name = decode_component(raw_name)
                .ok_or_else(|| malformed(raw_name, "invalid percent-encoding"))?;
            // A pattern's `+` is the regex's: form decoding would make `^/api/.+` the
            // `^/api/. ` no path matches, which a `skip-auth-ne` turns into a skip for all.
            let is_pattern = matches!(name.as_str(), "skip-auth" | "skip-auth-ne");
            let value = if is_pattern {
                decode_percent(raw_value)
            } else {
                decode_component(raw_value)
            }
            .ok_or_else(|| malformed(&name, "invalid percent-encoding"))?;
            match name.as_str() {
                "inject-claim" => query.injections.push(parse_inject_claim(&value)?),
                "inject-json-claim" => query.injections.push(parse_inject_json_claim(&value)?),
                "skip-auth" | "skip-auth-ne" if !skip_rules => left_out = true,
                "skip-auth" | "skip-auth-ne" => {
                    if query.skip_rules.len() == MAX_SKIP_RULES {
                        return Err(malformed(&name, "too many skip rules"));
                    }
                    let negated = name == "skip-auth-ne";
                    let rule = parse_skip(&name, &value, negated, MAX_QUERY_PATTERN_SIZE)?;
                    query.skip_rules.push(rule);
                }
                "" => return Err(malformed("", "empty parameter name")),
                _ => {
                    if value.is_empty() {
                        return Err(malformed(&name, "a claim rule needs a value"));
                    }
                    query.claim_rules.entry(name).or_default().push(value);
                }
            }
        }
        Ok((query, left_out))
    }
}

/// Form-style decoding (`+` is a space) that refuses invalid UTF-8.
fn decode_component(raw: &str) -> Option<String> {
    decode_percent(&raw.replace('+', " "))
}

/// Percent-decoding alone (`+` stays `+`) that refuses invalid UTF-8 and control characters.
fn decode_percent(raw: &str) -> Option<String> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    let text = String::from_utf8(bytes).ok()?;
    (!text.chars().any(char::is_control)).then_some(text)
}

fn header_name(parameter: &str, text: &str) -> Result<HeaderName, AuthQueryError> {
    let name = HeaderName::from_bytes(text.trim().as_bytes()).map_err(|_| {
        let text = crate::untrusted::bounded(text);
        malformed(parameter, format!("`{text}` is not a valid header name"))
    })?;
    if crate::http::cannot_carry_identity(name.as_str()) {
        return Err(malformed(
            parameter,
            format!("`{name}` cannot carry a claim"),
        ));
    }
    Ok(name)
}

fn parse_inject_claim(value: &str) -> Result<ClaimInjection, AuthQueryError> {
    let parts: Vec<&str> = value.split(',').map(str::trim).collect();
    match parts.as_slice() {
        [claim] if !claim.is_empty() => Ok(ClaimInjection::Claim {
            claim: (*claim).to_owned(),
            header: header_name("inject-claim", claim)?,
        }),
        [claim, header] if !claim.is_empty() => Ok(ClaimInjection::Claim {
            claim: (*claim).to_owned(),
            header: header_name("inject-claim", header)?,
        }),
        _ => Err(malformed(
            "inject-claim",
            "expected `claim` or `claim,Header-Name`",
        )),
    }
}

fn parse_inject_json_claim(value: &str) -> Result<ClaimInjection, AuthQueryError> {
    let mut parts = value.splitn(3, ',');
    let (Some(header), Some(claim), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed(
            "inject-json-claim",
            "expected `Header-Name,claim,$.json.path`",
        ));
    };
    let claim = claim.trim();
    if claim.is_empty() {
        return Err(malformed("inject-json-claim", "the claim name is empty"));
    }
    let path = serde_json_path::JsonPath::parse(path.trim())
        .map_err(|error| malformed("inject-json-claim", format!("invalid JSONPath: {error}")))?;
    Ok(ClaimInjection::JsonPath {
        header: header_name("inject-json-claim", header)?,
        claim: claim.to_owned(),
        path,
    })
}

/// Parses a route's skip rule, `[METHOD,]REGEX`.
///
/// # Errors
/// A message saying what is wrong.
pub fn parse_skip_rule(text: &str) -> Result<SkipRule, String> {
    parse_skip("skip", text, false, MAX_ROUTE_PATTERN_SIZE).map_err(|error| error.reason)
}

/// Longest pattern accepted.
const MAX_PATTERN_LENGTH: usize = 1024;
/// The compiled-size limit of a route's skip pattern (from the config).
const MAX_ROUTE_PATTERN_SIZE: usize = 1 << 20;
/// The compiled-size limit of a skip pattern in an `/auth` query, and the most skip rules one
/// query may hold: anyone may send a query to `/auth`, so one parsed holds at most 1 MiB of
/// compiled patterns, and the cache of parsed queries weighs each by its rules
/// (`forward_auth::AuthQueries`).
pub const MAX_QUERY_PATTERN_SIZE: usize = 128 << 10;
/// See [`MAX_QUERY_PATTERN_SIZE`].
pub const MAX_SKIP_RULES: usize = 8;

fn parse_skip(
    parameter: &str,
    value: &str,
    negated: bool,
    size_limit: usize,
) -> Result<SkipRule, AuthQueryError> {
    let (method, pattern) = match value.split_once(',') {
        Some((method, pattern)) if is_method_token(method) => {
            let method = Method::from_bytes(method.as_bytes())
                .map_err(|_| malformed(parameter, "invalid method"))?;
            (Some(method), pattern)
        }
        // `get,^/admin/` read as one pattern never matches (its `^` is mid-way), so as a
        // `skip-auth-ne` it would skip every request; oidc-guard takes `get` for a method
        // that no request has, and skips none.
        Some((method, _))
            if !method.is_empty() && method.bytes().all(|byte| byte.is_ascii_alphabetic()) =>
        {
            return Err(malformed(
                parameter,
                "a method is written in upper case (GET,^/path)",
            ));
        }
        _ => (None, value),
    };
    if pattern.is_empty() {
        return Err(malformed(parameter, "empty pattern"));
    }
    // `GET, ^/admin/`, `^/admin/ ` (a space before the next `&`): no canonical path holds
    // white space, so the pattern would never match (and as a `skip-auth-ne`, skip every
    // request), nor does a space in a class or escaped.
    if pattern.starts_with(|c: char| c.is_whitespace()) {
        return Err(malformed(parameter, "the pattern starts with white space"));
    }
    if pattern.contains(|c: char| c.is_whitespace()) {
        return Err(malformed(
            parameter,
            "the pattern holds white space, which no canonical path does (an encoded space is `%20`)",
        ));
    }
    // A character that prints as nothing (pasted from a page with the pattern: `^/admin` and a
    // zero-width space) makes the pattern match no path a client means, and as a
    // `skip-auth-ne` skip every request.
    // (The characters a log line escapes: a look-alike that prints, `∕` for `/`, is not one; a
    // pattern may hold any letter, `^/café`, for the decoded reading of a path.)
    if pattern.contains(crate::untrusted::is_unsafe) {
        return Err(malformed(
            parameter,
            "the pattern holds a character that prints as nothing (a Unicode format character such as a zero-width space)",
        ));
    }
    // `GET ,^/admin/`, `GET|HEAD,^/admin/`, `GET;^/admin/`: a method the parser did not take
    // for one leaves a `^` mid-way, which nothing matches.
    if has_a_caret_mid_way(pattern) {
        return Err(malformed(
            parameter,
            "`^` stands mid-way, where nothing can match it (a method is one upper-case word before the first comma)",
        ));
    }
    if pattern.len() > MAX_PATTERN_LENGTH {
        return Err(malformed(parameter, "pattern too long"));
    }
    let pattern = regex::RegexBuilder::new(pattern)
        .size_limit(size_limit)
        .build()
        .map_err(|error| malformed(parameter, format!("invalid regular expression: {error}")))?;
    Ok(SkipRule {
        method,
        pattern,
        negated,
    })
}

/// Whether `pattern` holds a `^` that cannot stand at the start of the text: one that follows
/// something the pattern must match first (`GET:^/admin/`, `GET(^/admin/)`). Without the
/// multi-line flag, which a skip rule has no use for, such a `^` matches nothing. A `^` at the
/// start of the pattern, of an alternative, or of a group that itself stands at the start
/// (`(^/a|^/b)`, `(?:^/a)`, `(?P<n>^/a)`, after `(?i)`) is where it may be; an escaped one
/// (`\^`) or one in a class (`[^x]`) is no anchor. Conservative: after a group or a
/// repetition nothing counts as the start.
fn has_a_caret_mid_way(pattern: &str) -> bool {
    let characters: Vec<char> = pattern.chars().collect();
    // For each open group, whether it opened at the start of the text.
    let mut groups: Vec<bool> = Vec::new();
    let mut at_start = true;
    let mut index = 0;
    while let Some(&character) = characters.get(index) {
        index += 1;
        match character {
            '\\' => {
                index += 1;
                at_start = false;
            }
            '[' => {
                // A class: `[^` negates, and a `]` first in it is a member.
                if characters.get(index) == Some(&'^') {
                    index += 1;
                }
                if characters.get(index) == Some(&']') {
                    index += 1;
                }
                while let Some(&member) = characters.get(index) {
                    index += if member == '\\' { 2 } else { 1 };
                    if member == ']' {
                        break;
                    }
                }
                at_start = false;
            }
            '(' if characters.get(index) == Some(&'?') => {
                // `(?flags)` sets flags and matches nothing; `(?flags:`, `(?P<n>` and `(?<n>`
                // open a group.
                let end = characters[index..]
                    .iter()
                    .position(|&c| matches!(c, ':' | ')' | '>'))
                    .map_or(characters.len(), |offset| index + offset);
                if characters.get(end) != Some(&')') {
                    groups.push(at_start);
                }
                index = end + 1;
            }
            '(' => groups.push(at_start),
            '|' => at_start = groups.last().copied().unwrap_or(true),
            ')' => {
                groups.pop();
                at_start = false;
            }
            '^' if !at_start => return true,
            '^' => {}
            _ => at_start = false,
        }
    }
    false
}

/// An HTTP method name as written in a skip rule: upper-case letters only.
fn is_method_token(text: &str) -> bool {
    !text.is_empty() && text.len() <= 16 && text.bytes().all(|byte| byte.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_not_in_upper_case_or_a_pattern_after_a_space_is_refused_not_inert() {
        for value in [
            "get,^/admin/",
            "Get,^/admin/",
            "GET, ^/admin/",
            " ^/admin/",
            "GET ,^/admin/",
            "GET|HEAD,^/admin/",
            "GET;^/admin/",
            "M-SEARCH,^/x",
            "GET:^/admin/",
            "GET(^/admin/)",
            "GET|HEAD:^/admin/",
            r"GET\(^/admin/",
            "(/a)^/b",
        ] {
            for negated in [false, true] {
                assert!(
                    parse_skip("skip-auth-ne", value, negated, MAX_ROUTE_PATTERN_SIZE).is_err(),
                    "{value}"
                );
            }
        }
        let rule =
            parse_skip("skip-auth-ne", "GET,^/admin/", true, MAX_ROUTE_PATTERN_SIZE).unwrap();
        assert!(!rule.skips(Some(&Method::GET), "/admin/x"));
        assert!(rule.skips(Some(&Method::GET), "/public/x"));
        // A pattern whose first part is no word is a pattern, not a method; a `^` that starts
        // a group or an alternative, is escaped or negates a class stands where it may.
        for value in [
            "/a,b",
            "^/a|^/b",
            "(^/a)",
            "(?:^/a)",
            "(?i)^/a",
            "(?P<n>^/a)",
            "(?<n>^/a)",
            r"/a\^b",
            "/[^x]",
            "/[]^]",
            "GET,(^/a|^/b)",
            "GET,^/healthz$",
            "^/api/public",
        ] {
            assert!(
                parse_skip("skip-auth", value, false, MAX_ROUTE_PATTERN_SIZE).is_ok(),
                "{value}"
            );
        }
    }

    #[test]
    fn a_skip_rule_holds_for_every_reading_of_the_path() {
        let skip = parse_skip("skip-auth", "^/public/", false, MAX_ROUTE_PATTERN_SIZE).unwrap();
        assert!(skip.skips(None, "/public/x"));
        assert!(skip.skips(None, "/public/%40x"));
        assert!(
            !skip.skips(None, "/public;x=1/y"),
            "a server that keeps the parameters serves /public;x=1/y, not under /public/"
        );
        let exact =
            parse_skip("skip-auth", "^/public/page$", false, MAX_ROUTE_PATTERN_SIZE).unwrap();
        assert!(
            !exact.skips(None, "/public/page;jsessionid=1"),
            "Tomcat serves /public/page, others /public/page;jsessionid=1: both must match"
        );
        let unless_me = parse_skip(
            "skip-auth-ne",
            "^/api/users/@me",
            true,
            MAX_ROUTE_PATTERN_SIZE,
        )
        .unwrap();
        assert!(unless_me.skips(None, "/api/other"));
        assert!(!unless_me.skips(None, "/api/users/@me"));
        assert!(
            !unless_me.skips(None, "/api/users/%40me"),
            "the application decodes %40 to @"
        );
        let unless_admin =
            parse_skip("skip-auth-ne", "^/admin/", true, MAX_ROUTE_PATTERN_SIZE).unwrap();
        assert!(
            !unless_admin.skips(None, "/admin;x/users"),
            "Tomcat drops the parameters: /admin/users"
        );
    }
}
