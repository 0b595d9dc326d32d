//! Deciding whether an identity may pass: claim requirements and the headers to return.
//! Knows nothing of where the identity came from. No IO.

pub mod auth_query;

use std::collections::BTreeMap;

use axum::http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

pub use auth_query::{AuthQuery, AuthQueryError, ClaimInjection, SkipRule};

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
    // Different claims must all match; a claim named more than once matches any of its values.
    for (claim, wanted) in &query.claim_rules {
        let holds = claims.get(claim).is_some_and(|value| {
            wanted
                .iter()
                .any(|candidate| value_matches(value, candidate))
        });
        if !holds {
            return Decision::Deny(format!("claim `{claim}` does not have a required value"));
        }
    }
    let mut headers = Vec::new();
    for injection in &query.injections {
        let text = match injection {
            ClaimInjection::Claim { claim, .. } => claims.get(claim).map(header_text),
            ClaimInjection::JsonPath { claim, path, .. } => claims
                .get(claim)
                .and_then(|value| json_path_text(value, path)),
        };
        let Some(text) = text else { continue };
        match HeaderValue::from_str(&text) {
            Ok(value) => headers.push((injection.header().clone(), value)),
            Err(_) => {
                return Decision::Deny(format!(
                    "the value for header `{}` cannot be sent as a header",
                    injection.header()
                ));
            }
        }
    }
    Decision::Allow(headers)
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

/// A claim as header text: strings as they are, arrays joined with `,`, others as JSON.
pub fn header_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(header_text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Runs a JSONPath over a claim that holds JSON or a JSON string; `None` when nothing matched.
fn json_path_text(value: &Value, path: &serde_json_path::JsonPath) -> Option<String> {
    let parsed;
    let document = match value {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).ok()?;
            &parsed
        }
        other => other,
    };
    let nodes = path.query(document).all();
    if nodes.is_empty() {
        return None;
    }
    Some(
        nodes
            .into_iter()
            .map(header_text)
            .collect::<Vec<_>>()
            .join(","),
    )
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

/// Checks a route's requirements (SPEC §5 `route.require`); all must hold.
///
/// # Errors
/// A message naming the first requirement that failed (never a claim value or a token).
pub fn check_requirements(
    require: &Requirements,
    claims: &Map<String, Value>,
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
        if !require.issuers.iter().any(|wanted| wanted == issuer) {
            return Err(format!(
                "the token must come from one of the issuers {}",
                require.issuers.join(", ")
            ));
        }
    }
    if !require.scopes.is_empty() {
        let mut scopes: Vec<String> = Vec::new();
        for name in ["scope", "scp"] {
            match claims.get(name) {
                Some(Value::String(text)) => scopes.extend(text.split(' ').map(str::to_owned)),
                other => scopes.extend(strings(other)),
            }
        }
        if let Some(missing) = require.scopes.iter().find(|scope| !scopes.contains(scope)) {
            return Err(format!("the scope `{missing}` is required"));
        }
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
        if !any_of(&roles, &require.roles) {
            return Err(format!(
                "one of the roles {} is required",
                require.roles.join(", ")
            ));
        }
    }
    if !require.realm_roles.is_empty() {
        let roles = strings(
            claims
                .get("realm_access")
                .and_then(|access| access.get("roles")),
        );
        if !any_of(&roles, &require.realm_roles) {
            return Err(format!(
                "one of the realm roles {} is required",
                require.realm_roles.join(", ")
            ));
        }
    }
    for (client, wanted) in &require.client_roles {
        let roles = strings(
            claims
                .get("resource_access")
                .and_then(|access| access.get(client))
                .and_then(|entry| entry.get("roles")),
        );
        if !any_of(&roles, wanted) {
            return Err(format!(
                "one of the roles {} of client `{client}` is required",
                wanted.join(", ")
            ));
        }
    }
    if !require.groups.is_empty() && !any_of(&strings(claims.get("groups")), &require.groups) {
        return Err(format!(
            "membership of one of the groups {} is required",
            require.groups.join(", ")
        ));
    }
    if !require.email_domains.is_empty() {
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        let unverified = claims.get("email_verified") == Some(&Value::Bool(false));
        let domain_ok = email
            .rsplit_once('@')
            .is_some_and(|(_, domain)| require.email_domains.iter().any(|wanted| wanted == domain));
        if unverified || !domain_ok {
            return Err(format!(
                "a verified e-mail address at {} is required",
                require.email_domains.join(", ")
            ));
        }
    }
    for (claim, wanted) in &require.claims {
        let holds = claims.get(claim).is_some_and(|value| {
            wanted
                .iter()
                .any(|candidate| value_matches(value, candidate))
        });
        if !holds {
            return Err(format!("claim `{claim}` does not have a required value"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
