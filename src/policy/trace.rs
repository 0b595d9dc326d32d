//! `Trace`: what a decision looked at, step by step, for `POST /admin/explain` (SPEC §8). The
//! real request and the explanation run the same decision code; a real request carries a
//! trace that is off (recording costs one branch), an explanation one that records. A trace
//! that records also means "only explaining": code that would change state on the way (a
//! session refresh, a session touch) must leave it alone.

use serde_json::Value;

/// One step of a decision: what was looked at, what came of it, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    /// What was looked at (`session cookie`, `requirement`, …).
    pub step: &'static str,
    /// What came of it (`pass`, `fail`, `none`, …).
    pub outcome: &'static str,
    /// Why, with the claim values seen; never a token or a cookie value.
    pub detail: String,
}

/// The steps of one decision, when they are being recorded.
#[derive(Debug, Default)]
pub struct Trace {
    steps: Option<Vec<Step>>,
}

impl Trace {
    /// A real request: nothing is recorded.
    pub const fn off() -> Self {
        Self { steps: None }
    }

    /// An explanation: every step is recorded, and nothing may be changed.
    pub fn explaining() -> Self {
        Self {
            steps: Some(Vec::new()),
        }
    }

    /// Whether this decision is only being explained (no side effects allowed).
    pub const fn is_explaining(&self) -> bool {
        self.steps.is_some()
    }

    /// Records a step; `detail` is only computed when recording.
    pub fn record(
        &mut self,
        step: &'static str,
        outcome: &'static str,
        detail: impl FnOnce() -> String,
    ) {
        if let Some(steps) = &mut self.steps {
            steps.push(Step {
                step,
                outcome,
                detail: detail(),
            });
        }
    }

    /// The steps recorded.
    pub fn into_steps(self) -> Vec<Step> {
        self.steps.unwrap_or_default()
    }
}

/// The longest claim value an explanation shows.
const MAX_SHOWN: usize = 256;

/// What [`seen`] says of a claim as [`super::vouched_claim`] reads it, saying so when an
/// address is there but not vouched for.
pub fn seen_vouched(claims: &serde_json::Map<String, Value>, name: &str) -> String {
    match (claims.get(name), super::vouched_claim(claims, name)) {
        (Some(_), None) => format!("`{name}` not verified (`email_verified` is not true)"),
        (_, value) => seen(name, value),
    }
}

/// `name = <value as JSON>` for a step's detail, or that the claim is absent; long values
/// are cut.
pub fn seen(name: &str, value: Option<&Value>) -> String {
    match value {
        None => format!("no `{name}` claim"),
        Some(value) => {
            let mut text = value.to_string();
            if text.len() > MAX_SHOWN {
                let mut end = MAX_SHOWN;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push('…');
            }
            format!("`{name}` = {text}")
        }
    }
}
