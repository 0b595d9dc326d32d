//! `TOLLGATE_<PATH>` overrides: `TOLLGATE_SESSION__STORE=redis` sets `session.store`, and
//! `TOLLGATE_PROVIDER__0__CLIENT_ID=x` sets `provider[0].client_id`. They are applied to the
//! parsed TOML table before it is deserialised, so file and environment share one code path.
//! The variables are handed in as a map; nothing here reads the process environment.

use std::collections::BTreeMap;

use super::ConfigProblem;

/// Variables that start with `TOLLGATE_` but are not config overrides.
const NOT_CONFIG: &[&str] = &["LOG", "CONFIG"];

/// Applies every `TOLLGATE_…` variable of `env` to `table`.
pub(super) fn apply_overrides(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
    problems: &mut Vec<ConfigProblem>,
) {
    for (name, value) in env {
        let Some(path) = name.strip_prefix("TOLLGATE_") else {
            continue;
        };
        if NOT_CONFIG.contains(&path) || path.starts_with("TEST_") {
            continue;
        }
        let segments: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if segments.iter().any(String::is_empty) {
            problems.push(ConfigProblem::new(name, "malformed override variable name"));
            continue;
        }
        if let Err(message) = set_path(table, &segments, override_value(value)) {
            problems.push(ConfigProblem::new(name, message));
        }
    }
}

/// An override is a string, except `true`/`false` and TOML arrays (`["a", "b"]`).
fn override_value(text: &str) -> toml::Value {
    let trimmed = text.trim();
    match trimmed {
        "true" => return toml::Value::Boolean(true),
        "false" => return toml::Value::Boolean(false),
        _ => {}
    }
    if trimmed.starts_with('[')
        && let Ok(mut parsed) = toml::from_str::<toml::Table>(&format!("v = {trimmed}"))
        && let Some(value) = parsed.remove("v")
    {
        return value;
    }
    toml::Value::String(text.to_owned())
}

fn set_path(
    table: &mut toml::Table,
    segments: &[String],
    value: toml::Value,
) -> Result<(), String> {
    let Some((first, rest)) = segments.split_first() else {
        return Err("empty key path".to_owned());
    };
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let child = table
        .entry(first.clone())
        .or_insert_with(|| empty_container(rest));
    set_in_value(child, rest, value)
}

fn empty_container(rest: &[String]) -> toml::Value {
    match rest.first() {
        Some(next) if next.parse::<usize>().is_ok() => toml::Value::Array(Vec::new()),
        _ => toml::Value::Table(toml::Table::new()),
    }
}

fn set_in_value(
    node: &mut toml::Value,
    segments: &[String],
    value: toml::Value,
) -> Result<(), String> {
    match node {
        toml::Value::Table(table) => set_path(table, segments, value),
        toml::Value::Array(items) => {
            let Some((first, rest)) = segments.split_first() else {
                return Err("empty key path".to_owned());
            };
            let index: usize = first
                .parse()
                .map_err(|_| format!("`{first}` is not an index into an array"))?;
            if index > items.len() {
                return Err(format!(
                    "index {index} skips entries (the array has {})",
                    items.len()
                ));
            }
            if index == items.len() {
                items.push(empty_container(rest));
            }
            let Some(item) = items.get_mut(index) else {
                return Err(format!("index {index} out of range"));
            };
            if rest.is_empty() {
                *item = value;
                Ok(())
            } else {
                set_in_value(item, rest, value)
            }
        }
        _ => Err("overrides a value that is not a table".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(toml_text: &str, vars: &[(&str, &str)]) -> (toml::Table, Vec<ConfigProblem>) {
        let mut table: toml::Table = toml::from_str(toml_text).unwrap();
        let env = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut problems = Vec::new();
        apply_overrides(&mut table, &env, &mut problems);
        (table, problems)
    }

    #[test]
    fn nested_key_is_overridden() {
        let (table, problems) = apply(
            "[session]\nstore = \"cookie\"",
            &[("TOLLGATE_SESSION__STORE", "redis")],
        );
        assert!(problems.is_empty());
        assert_eq!(table["session"]["store"].as_str(), Some("redis"));
    }

    #[test]
    fn array_entry_is_overridden_and_booleans_and_lists_parse() {
        let (table, problems) = apply(
            "[[provider]]\nname = \"a\"",
            &[
                ("TOLLGATE_PROVIDER__0__CLIENT_ID", "x"),
                ("TOLLGATE_PROVIDER__0__END_SESSION", "false"),
                ("TOLLGATE_PROVIDER__0__SCOPES", "[\"openid\", \"email\"]"),
            ],
        );
        assert!(problems.is_empty(), "{problems:?}");
        let provider = &table["provider"][0];
        assert_eq!(provider["client_id"].as_str(), Some("x"));
        assert_eq!(provider["end_session"].as_bool(), Some(false));
        assert_eq!(provider["scopes"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn gaps_in_arrays_are_problems() {
        let (_, problems) = apply("", &[("TOLLGATE_PROVIDER__3__NAME", "x")]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "TOLLGATE_PROVIDER__3__NAME");
    }
}
