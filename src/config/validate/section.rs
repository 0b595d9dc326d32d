//! Reading one section of the TOML into its raw type: unknown keys (found with
//! `serde_ignored`) and type errors become problems with key paths. A key of the wrong type is
//! reported and then left out, and the section read again without it, so that one mistyped key
//! neither hides another nor takes the rest of its section with it: a mistyped
//! `session.lifetime` must not also be reported as missing `session.secrets`.

use serde::de::DeserializeOwned;

use crate::config::ConfigProblem;

/// The most keys one section can lose to type errors before it is given up as a whole.
const MAX_LEFT_OUT: usize = 64;

/// What was left out of the sections for its type: keys, by their whole path, and sections
/// that could not be read at all. A check run on what is left would only repeat such a problem
/// as a "missing" or "required" one at the key's own path, or anywhere in a lost section.
#[derive(Default)]
pub(super) struct LeftOut {
    keys: Vec<String>,
    sections: Vec<String>,
}

impl LeftOut {
    /// Whether a problem at `path` is about something left out: the key itself (compared
    /// whole, since a key may hold a `.`: `X-User` is not `X-User.Id`'s parent), or anything
    /// in a lost section (`session`, `route[2]`: names without a `.` of their own).
    pub(super) fn covers(&self, path: &str) -> bool {
        self.keys.iter().any(|key| key == path)
            || self.sections.iter().any(|section| {
                path.strip_prefix(section.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            })
    }
}

/// One step of a key path into a TOML value.
enum Step {
    Key(String),
    Index(usize),
}

/// Reads the section at `base` from `value`. Unknown keys and type errors are pushed to
/// `problems`; a key of the wrong type is recorded in `left_out` and the section is read
/// without it. A section that cannot be read at all is its type's default (and is recorded as
/// lost).
pub(super) fn section<T: DeserializeOwned + Default>(
    base: &str,
    mut value: toml::Value,
    problems: &mut Vec<ConfigProblem>,
    left_out: &mut LeftOut,
) -> T {
    for _ in 0..MAX_LEFT_OUT {
        let mut unknown = Vec::new();
        let mut record =
            |path: serde_ignored::Path<'_>| unknown.push(join_path(base, &ignored_path(&path)));
        let deserializer = serde_ignored::Deserializer::new(value.clone(), &mut record);
        let result: Result<T, _> = serde_path_to_error::deserialize(deserializer);
        let error = match result {
            Ok(parsed) => {
                problems.extend(
                    unknown
                        .into_iter()
                        .map(|path| ConfigProblem::new(path, "unknown key")),
                );
                return parsed;
            }
            Err(error) => error,
        };
        let mut steps: Vec<Step> = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Step::Key(key.clone())),
                serde_path_to_error::Segment::Enum { .. }
                | serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        problems.push(ConfigProblem::new(
            join_path(base, &rendered(&steps)),
            // The message alone: the key path says where (toml's own text adds "in `key`").
            without_value(error.inner().message()),
        ));
        // A bad element takes its whole list out: without it the elements after it would be
        // read at other indices, and their problems named at the wrong ones.
        while matches!(steps.last(), Some(Step::Index(_))) {
            steps.pop();
        }
        if !remove(&mut value, &steps) {
            left_out.sections.push(base.to_owned());
            return T::default();
        }
        left_out.keys.push(join_path(base, &rendered(&steps)));
    }
    left_out.sections.push(base.to_owned());
    T::default()
}

/// Removes the key at `steps` (ending with a key) from `value`; false when there is none to
/// remove.
fn remove(value: &mut toml::Value, steps: &[Step]) -> bool {
    let Some((Step::Key(last), parents)) = steps.split_last() else {
        return false;
    };
    let mut at = value;
    for step in parents {
        let next = match (step, at) {
            (Step::Key(key), toml::Value::Table(table)) => table.get_mut(key),
            (Step::Index(index), toml::Value::Array(items)) => items.get_mut(*index),
            _ => None,
        };
        let Some(next) = next else { return false };
        at = next;
    }
    match at {
        toml::Value::Table(table) => table.remove(last).is_some(),
        _ => false,
    }
}

/// `steps` as a key path: `a.b[2].c`.
fn rendered(steps: &[Step]) -> String {
    let mut path = String::new();
    for step in steps {
        match step {
            Step::Index(index) => path.push_str(&format!("[{index}]")),
            Step::Key(key) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
        }
    }
    path
}

/// A type error's message without the value it quotes (`invalid type: string "…", expected a
/// sequence` is `invalid type: string, expected a sequence`): the value may be a secret
/// (`secrets = "…"` as a string), and problems are printed by `check` and logged at a reload.
fn without_value(message: &str) -> String {
    let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    else {
        return message.to_owned();
    };
    let lead = &message[..message.len() - rest.len()];
    let kind = rest
        .split([' ', ','])
        .next()
        .filter(|word| !word.starts_with(['"', '`']))
        .unwrap_or("a value");
    let expected = rest.find(", expected").map_or("", |at| &rest[at..]);
    format!("{lead}{kind}{expected}")
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    match path {
        serde_ignored::Path::Root => String::new(),
        serde_ignored::Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        serde_ignored::Path::Map { parent, key } => join_path(&ignored_path(parent), key),
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

fn join_path(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => base.to_owned(),
        _ if rest.starts_with('[') => format!("{base}{rest}"),
        _ => format!("{base}.{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{LeftOut, without_value};

    #[test]
    fn type_errors_name_the_kind_never_the_value() {
        assert_eq!(
            without_value(r#"invalid type: string "SuperSecret-value", expected a sequence"#),
            "invalid type: string, expected a sequence"
        );
        assert_eq!(
            without_value("invalid value: integer `-5`, expected u64"),
            "invalid value: integer, expected u64"
        );
        assert_eq!(
            without_value(r#"invalid value: "x", expected y"#),
            "invalid value: a value, expected y"
        );
        assert_eq!(without_value("missing field `url`"), "missing field `url`");
    }

    #[test]
    fn a_left_out_key_covers_itself_and_a_lost_section_all_it_held() {
        let left_out = LeftOut {
            keys: vec![
                "session.secrets".to_owned(),
                "route[0].headers.X-User".to_owned(),
            ],
            sections: vec!["route[1]".to_owned()],
        };
        for path in [
            "session.secrets",
            "route[1]",
            "route[1].upstream",
            "route[1].skip[0]",
        ] {
            assert!(left_out.covers(path), "{path}");
        }
        for path in [
            "session.secrets_file",
            "session",
            "route[0].headers.X-User.Id",
            "route[10]",
            "route[0]",
        ] {
            assert!(!left_out.covers(path), "{path}");
        }
    }
}
