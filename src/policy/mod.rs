//! Deciding whether an identity may pass: claim requirements and the headers to return.
//! Knows nothing of where the identity came from. No IO.

pub mod auth_query;
pub mod trace;

use std::collections::BTreeMap;

use axum::http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

pub use auth_query::{AuthQuery, AuthQueryError, ClaimInjection, SkipRule};
pub use trace::{Step, Trace};

use trace::seen;

/// The outcome of applying requirements to an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every requirement holds; send these headers.
    Allow(Vec<(HeaderName, HeaderValue)>),
    /// A requirement failed; the text names it (never a token or a claim value).
    Deny(String),
}

/// Applies an `/auth` query to the claims of an authenticated identity (SPEC §4).
pub fn decide(query: &AuthQuery, claims: &Map<String, Value>) -> Decision {
    decide_traced(query, claims, &mut Trace::off())
}

/// `decide`, recording each claim rule and injection in `trace`.
pub fn decide_traced(
    query: &AuthQuery,
    claims: &Map<String, Value>,
    trace: &mut Trace,
) -> Decision {
    // Different claims must all match; a claim named more than once matches any of its values.
    for (claim, wanted) in &query.claim_rules {
        let holds = vouched_claim(claims, claim).is_some_and(|value| {
            wanted
                .iter()
                .any(|candidate| value_matches(value, candidate))
        });
        trace.record("claim rule", pass_or_fail(holds), || {
            format!(
                "`{claim}` must be one of {}; saw {}",
                wanted.join(", "),
                trace::seen_vouched(claims, claim)
            )
        });
        if !holds {
            // The claim's name is the query's: quoted bounded, as the caller is told it.
            return Decision::Deny(format!(
                "claim `{}` does not have a required value",
                crate::untrusted::bounded(claim)
            ));
        }
    }
    let mut headers = Vec::new();
    for injection in &query.injections {
        let (claim, text) = match injection {
            ClaimInjection::Claim { claim, .. } => {
                (claim, vouched_claim(claims, claim).map(header_text))
            }
            ClaimInjection::JsonPath { claim, path, .. } => (
                claim,
                vouched_claim(claims, claim).and_then(|value| json_path_text(value, path)),
            ),
        };
        let Some(text) = text else {
            trace.record("inject header", "none", || {
                format!(
                    "`{}` is not sent: {}",
                    injection.header(),
                    trace::seen_vouched(claims, claim)
                )
            });
            continue;
        };
        match HeaderValue::from_str(&text) {
            Ok(value) => {
                trace.record("inject header", "pass", || {
                    format!(
                        "`{}` from {}",
                        injection.header(),
                        trace::seen_vouched(claims, claim)
                    )
                });
                headers.push((injection.header().clone(), value));
            }
            Err(_) => {
                trace.record("inject header", "fail", || {
                    format!(
                        "`{}` cannot carry the value of {}",
                        injection.header(),
                        trace::seen_vouched(claims, claim)
                    )
                });
                return Decision::Deny(format!(
                    "the value for header `{}` cannot be sent as a header",
                    injection.header()
                ));
            }
        }
    }
    Decision::Allow(headers)
}

/// A claim as Tollgate vouches for it to a rule or an application: as the claims hold it,
/// except `email` when `email_verified` says it is not verified (`false`, or anything but
/// `true`). Where users may set their own address, an unverified `ceo@corp.example` in
/// `X-Auth-Email` would be the CEO to the application; oauth2-proxy refuses such an address
/// too. An address without `email_verified` is taken at the provider's word.
pub fn vouched_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if name == "email" && crate::token::email_verified(claims) == Some(false) {
        return None;
    }
    claims.get(name)
}

/// A step's outcome for a rule that holds or not.
pub const fn pass_or_fail(holds: bool) -> &'static str {
    if holds { "pass" } else { "fail" }
}

/// A claim equals a wanted value: strings exactly, numbers and booleans by their JSON text,
/// arrays when any element does.
fn value_matches(value: &Value, wanted: &str) -> bool {
    match value {
        Value::String(text) => text == wanted,
        Value::Number(number) => number.to_string() == wanted,
        Value::Bool(flag) => flag.to_string() == wanted,
        Value::Array(items) => items
            .iter()
            .any(|item| !item.is_array() && value_matches(item, wanted)),
        Value::Null | Value::Object(_) => false,
    }
}

/// A claim as header text: strings as they are (but for what follows), arrays joined with
/// `,`, others as JSON.
///
/// What the application would read back as another value is percent-encoded instead (with
/// the `%` of such a value as `%25`): white space at either end of a string, which parsers and
/// applications trim (`"admin "` would be `admin`), and a `,` in a string, at which
/// applications split (Spring splits `X-Groups: x,admin,y` into three, one of them `admin`),
/// whether it is a list's element or the claim's one value (a provider such as AD FS sends a
/// list of one as a plain string: `groups: "x,admin"` is no member of `admin` to a rule, and
/// must not read as one to the application either; so `Doe, Jane` arrives as `Doe%2C Jane`).
/// Encoded, such a value never reads as another identity, and locks no one out (a
/// directory's `cn=admins,ou=groups` arrives as `cn=admins%2Cou=groups`). An object is its
/// JSON with its commas encoded the same way (`{"k":"x,admin,y"}` split at commas would hold
/// `admin`). Characters outside ASCII, which a header cannot carry as text, are encoded too
/// (`José` as `Jos%C3%A9`), so a user with such a name is not refused.
pub fn header_text(value: &Value) -> String {
    match value {
        Value::Array(items) => joined(items),
        one @ (Value::String(_) | Value::Object(_)) => element_text(one),
        other => other.to_string(),
    }
}

/// `values` as one comma-separated header text, the elements of arrays among them in line,
/// each a list element (`element_text`).
fn joined<'a>(values: impl IntoIterator<Item = &'a Value>) -> String {
    fn push(value: &Value, parts: &mut Vec<String>) {
        match value {
            Value::Array(items) => items.iter().for_each(|item| push(item, parts)),
            other => parts.push(element_text(other)),
        }
    }
    let mut parts = Vec::new();
    for value in values {
        push(value, &mut parts);
    }
    parts.join(",")
}

/// One list element as header text: encoded (`encoded`) when it holds `,` or has white space
/// at either end, since a reader splitting the list would read it otherwise.
fn element_text(value: &Value) -> String {
    let text = match value {
        Value::String(text) => std::borrow::Cow::Borrowed(text.as_str()),
        other => std::borrow::Cow::Owned(other.to_string()),
    };
    if text.contains(',') || needs_encoding(&text) {
        encoded(&text, true)
    } else {
        text.into_owned()
    }
}

/// Whether `text` is sent percent-encoded (`encoded`): white space at an end, a character
/// outside ASCII, or a `%` followed by two hex digits, which an encoded value could be
/// (`Jos%C3%A9`, literally, would otherwise read as the encoded `José`; it is sent as
/// `Jos%25C3%25A9`). Every encoded value holds such an escape and no other value does, so no
/// two strings are sent alike.
fn needs_encoding(text: &str) -> bool {
    has_white_ends(text) || !text.is_ascii() || has_percent_escape(text)
}

/// Whether `text` holds `%` and two hex digits.
fn has_percent_escape(text: &str) -> bool {
    text.as_bytes().windows(3).any(|window| {
        window[0] == b'%' && window[1].is_ascii_hexdigit() && window[2].is_ascii_hexdigit()
    })
}

/// Whether `text` starts or ends with white space (any, as `str::trim` and Go's
/// `strings.TrimSpace` cut it, not only the SP and HTAB header parsers cut).
fn has_white_ends(text: &str) -> bool {
    text.starts_with(char::is_whitespace) || text.ends_with(char::is_whitespace)
}

/// `text` with `%`, the white space at its ends, every character outside ASCII and, with
/// `commas`, every `,` percent-encoded (their UTF-8 bytes).
fn encoded(text: &str, commas: bool) -> String {
    let start = text.len() - text.trim_start().len();
    let end = text.trim_end().len();
    let mut encoded = String::with_capacity(text.len() + 6);
    for (index, character) in text.char_indices() {
        let at_an_end = index < start || index >= end;
        if character == '%' || (commas && character == ',') || at_an_end || !character.is_ascii() {
            let mut bytes = [0; 4];
            for byte in character.encode_utf8(&mut bytes).bytes() {
                encoded.push_str(&format!("%{byte:02X}"));
            }
        } else {
            encoded.push(character);
        }
    }
    encoded
}

/// Runs a JSONPath over a claim that holds JSON or a JSON string; `None` when nothing matched.
/// A match that is a string, and every match when there are several, is a list element
/// (`element_text`): a path like `$.roles[*]` may match one element of a list. One match of
/// another kind is written as `header_text` writes it.
pub fn json_path_text(value: &Value, path: &serde_json_path::JsonPath) -> Option<String> {
    let parsed;
    let document = match value {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).ok()?;
            &parsed
        }
        other => other,
    };
    let nodes = path.query(document).all();
    match nodes.as_slice() {
        [] => None,
        [one] if !one.is_string() => Some(header_text(one)),
        _ => Some(joined(nodes)),
    }
}

/// `[route.require]`: every listed requirement must hold.
#[derive(Debug, Clone, Default)]
pub struct Requirements {
    /// `iss` is one of these.
    pub issuers: Vec<String>,
    /// Every one of these is in `scope` / `scp`.
    pub scopes: Vec<String>,
    /// Any one of these is in the roles at `roles_claim`.
    pub roles: Vec<String>,
    /// Where the roles are (default `$.roles`).
    pub roles_claim: Option<serde_json_path::JsonPath>,
    /// Any one of these is in `realm_access.roles`.
    pub realm_roles: Vec<String>,
    /// Per client: any one of these is in `resource_access.<client>.roles`.
    pub client_roles: BTreeMap<String, Vec<String>>,
    /// Any one of these is in `groups`.
    pub groups: Vec<String>,
    /// `email` ends in `@` and one of these.
    pub email_domains: Vec<String>,
    /// Each claim has one of its listed values.
    pub claims: BTreeMap<String, Vec<String>>,
}

impl Requirements {
    /// Whether nothing is required (`roles_claim` alone requires nothing).
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
            && self.scopes.is_empty()
            && self.roles.is_empty()
            && self.realm_roles.is_empty()
            && self.client_roles.is_empty()
            && self.groups.is_empty()
            && self.email_domains.is_empty()
            && self.claims.is_empty()
    }
}

/// Checks a route's requirements (SPEC §5 `route.require`); all must hold.
///
/// # Errors
/// A message naming the first requirement that failed (never a claim value or a token).
pub fn check_requirements(
    require: &Requirements,
    claims: &Map<String, Value>,
) -> Result<(), String> {
    check_requirements_traced(require, claims, &mut Trace::off())
}

/// Records one requirement in `trace` and turns a failed one into its message.
fn requirement(
    trace: &mut Trace,
    holds: bool,
    detail: impl FnOnce() -> String,
    failure: impl FnOnce() -> String,
) -> Result<(), String> {
    trace.record("requirement", pass_or_fail(holds), detail);
    if holds { Ok(()) } else { Err(failure()) }
}

/// `check_requirements`, recording each requirement with the claim value it saw in `trace`.
///
/// # Errors
/// A message naming the first requirement that failed (never a claim value or a token).
pub fn check_requirements_traced(
    require: &Requirements,
    claims: &Map<String, Value>,
    trace: &mut Trace,
) -> Result<(), String> {
    let strings = |value: Option<&Value>| -> Vec<String> {
        match value {
            Some(Value::String(text)) => vec![text.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    };
    let any_of = |have: &[String], wanted: &[String]| {
        wanted.iter().any(|candidate| have.contains(candidate))
    };
    if !require.issuers.is_empty() {
        let issuer = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        requirement(
            trace,
            require.issuers.iter().any(|wanted| wanted == issuer),
            || {
                format!(
                    "issuers: one of {}; saw {}",
                    require.issuers.join(", "),
                    seen("iss", claims.get("iss"))
                )
            },
            || {
                format!(
                    "the token must come from one of the issuers {}",
                    require.issuers.join(", ")
                )
            },
        )?;
    }
    if !require.scopes.is_empty() {
        let mut scopes: Vec<String> = Vec::new();
        for name in ["scope", "scp"] {
            match claims.get(name) {
                Some(Value::String(text)) => scopes.extend(text.split(' ').map(str::to_owned)),
                other => scopes.extend(strings(other)),
            }
        }
        let missing = require.scopes.iter().find(|scope| !scopes.contains(scope));
        requirement(
            trace,
            missing.is_none(),
            || {
                format!(
                    "scopes: all of {}; saw {}, {}",
                    require.scopes.join(", "),
                    seen("scope", claims.get("scope")),
                    seen("scp", claims.get("scp"))
                )
            },
            || format!("the scope `{}` is required", missing.map_or("", |s| s)),
        )?;
    }
    if !require.roles.is_empty() {
        let roles: Vec<String> = match &require.roles_claim {
            Some(path) => path
                .query(&Value::Object(claims.clone()))
                .all()
                .into_iter()
                .flat_map(|node| strings(Some(node)))
                .collect(),
            None => strings(claims.get("roles")),
        };
        requirement(
            trace,
            any_of(&roles, &require.roles),
            || {
                let at = require
                    .roles_claim
                    .as_ref()
                    .map_or_else(|| "$.roles".to_owned(), ToString::to_string);
                format!(
                    "roles: one of {}; saw {at} = {}",
                    require.roles.join(", "),
                    Value::from(roles.clone())
                )
            },
            || format!("one of the roles {} is required", require.roles.join(", ")),
        )?;
    }
    if !require.realm_roles.is_empty() {
        let realm_roles = claims
            .get("realm_access")
            .and_then(|access| access.get("roles"));
        requirement(
            trace,
            any_of(&strings(realm_roles), &require.realm_roles),
            || {
                format!(
                    "realm_roles: one of {}; saw {}",
                    require.realm_roles.join(", "),
                    seen("realm_access.roles", realm_roles)
                )
            },
            || {
                format!(
                    "one of the realm roles {} is required",
                    require.realm_roles.join(", ")
                )
            },
        )?;
    }
    for (client, wanted) in &require.client_roles {
        let client_roles = claims
            .get("resource_access")
            .and_then(|access| access.get(client))
            .and_then(|entry| entry.get("roles"));
        requirement(
            trace,
            any_of(&strings(client_roles), wanted),
            || {
                format!(
                    "client_roles of `{client}`: one of {}; saw {}",
                    wanted.join(", "),
                    seen(&format!("resource_access.{client}.roles"), client_roles)
                )
            },
            || {
                format!(
                    "one of the roles {} of client `{client}` is required",
                    wanted.join(", ")
                )
            },
        )?;
    }
    if !require.groups.is_empty() {
        requirement(
            trace,
            any_of(&strings(claims.get("groups")), &require.groups),
            || {
                format!(
                    "groups: one of {}; saw {}",
                    require.groups.join(", "),
                    seen("groups", claims.get("groups"))
                )
            },
            || {
                format!(
                    "membership of one of the groups {} is required",
                    require.groups.join(", ")
                )
            },
        )?;
    }
    if !require.email_domains.is_empty() {
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        // A provider that sends no `email_verified` at all is taken at its word, as
        // oauth2-proxy does.
        let unverified = crate::token::email_verified(claims) == Some(false);
        let domain_ok = email
            .rsplit_once('@')
            .is_some_and(|(_, domain)| require.email_domains.iter().any(|wanted| wanted == domain));
        requirement(
            trace,
            !unverified && domain_ok,
            || {
                format!(
                    "email_domains: a verified address at {}; saw {}, {}",
                    require.email_domains.join(", "),
                    seen("email", claims.get("email")),
                    seen("email_verified", claims.get("email_verified"))
                )
            },
            || {
                format!(
                    "a verified e-mail address at {} is required",
                    require.email_domains.join(", ")
                )
            },
        )?;
    }
    for (claim, wanted) in &require.claims {
        let holds = vouched_claim(claims, claim).is_some_and(|value| {
            wanted
                .iter()
                .any(|candidate| value_matches(value, candidate))
        });
        requirement(
            trace,
            holds,
            || {
                format!(
                    "claims: `{claim}` one of {}; saw {}",
                    wanted.join(", "),
                    trace::seen_vouched(claims, claim)
                )
            },
            || format!("claim `{claim}` does not have a required value"),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
