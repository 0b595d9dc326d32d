//! Deciding whether an identity may pass: claim requirements and the headers to return.
//! Knows nothing of where the identity came from. No IO.

pub mod auth_query;

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

#[cfg(test)]
mod tests;
