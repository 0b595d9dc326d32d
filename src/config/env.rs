//! `TOLLGATE_<PATH>` overrides: `TOLLGATE_SESSION__STORE=redis` sets `session.store`, and
//! `TOLLGATE_PROVIDER__0__CLIENT_ID=x` sets `provider[0].client_id`. They are applied to the
//! parsed TOML table before it is deserialised, so file and environment share one code path.
//! The variables are handed in as a map; nothing here reads the process environment.
//!
//! A variable is an override only when its first segment names a config section (SPEC §2):
//! Kubernetes injects `TOLLGATE_SERVICE_HOST`, `TOLLGATE_PORT_4180_TCP_ADDR`… into every pod
//! of a namespace with a Service named `tollgate`, and `TOLLGATE_LOG` is read by `main`; such
//! variables are none of the config's business. Inside a section, an unknown key is an error.

use std::collections::BTreeMap;

use super::ConfigProblem;

/// The config sections, as the first segment of `TOLLGATE_<SECTION>__…` spells them.
const SECTIONS: &[&str] = &[
    "SERVER",
    "PROVIDER",
    "SESSION",
    "FORWARD_AUTH",
    "ROUTE",
    "TOKEN_SERVICE",
    "TELEMETRY",
];

/// Whether `key` (a top-level TOML key, lower case) is one of the sections SPEC §3 names.
pub(super) fn is_section(key: &str) -> bool {
    SECTIONS
        .iter()
        .any(|section| section.eq_ignore_ascii_case(key))
}

/// One variable that was applied: the key path it set, and its name.
#[derive(Debug)]
pub(super) struct Override {
    path: String,
    variable: String,
}

/// Applies every override of `env` to `table` (see the module comment for which variables are
/// overrides) and returns what each one set, so that problems can name their variable.
pub(super) fn apply_overrides(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<Override> {
    let mut overrides: Vec<(&String, &String, Vec<String>)> = env
        .iter()
        .filter_map(|(name, value)| {
            let path = name.strip_prefix("TOLLGATE_")?;
            if is_kubernetes_service_link(path, value) {
                return None;
            }
            let section = path.split_once("__").map_or(path, |(first, _)| first);
            let segments = path.split("__").map(str::to_ascii_lowercase).collect();
            is_section(section).then_some((name, value, segments))
        })
        .collect();
    // Array entries in the order of their indexes, not of their names: `ROUTE__10__…` sorts
    // before `ROUTE__2__…` by name, and would be refused as skipping entries.
    overrides.sort_by(|(_, _, one), (_, _, other)| {
        let order = |segment: &String| (segment.parse::<u64>().ok(), segment.clone());
        one.iter().map(order).cmp(other.iter().map(order))
    });
    let mut applied = Vec::new();
    for (name, value, segments) in overrides {
        if segments.iter().any(String::is_empty) {
            problems.push(ConfigProblem::new(name, "malformed override variable name"));
            continue;
        }
        match set_path(table, &segments, override_value(value)) {
            Ok(()) => applied.push(Override {
                path: key_path(&segments),
                variable: name.clone(),
            }),
            Err(message) => problems.push(ConfigProblem::new(name, message)),
        }
    }
    applied
}

/// Variables that look meant as overrides but are none: spelt like one
/// (`TOLLGATE_<SEGMENT>__<KEY>`) with a first segment that is no section, such as a misspelt
/// `TOLLGATE_SESSON__STORE`, or a section followed by one underscore, as other gateways spell
/// theirs (`TOLLGATE_SERVER_TRUSTED_PROXIES`, oauth2-proxy's `OAUTH2_PROXY_…`). SPEC §2 has
/// them ignored, so they do not stop a start; `check` and `serve` name them so that the
/// mistake is seen. Kubernetes' service links (`TOLLGATE_SERVER_SERVICE_HOST` for a Service
/// named `tollgate-server`) are not named, but for one spelt like an override (a Service
/// named with `--`), which may as well be an override the operator meant: it is named.
pub(super) fn ignored_variables(env: &BTreeMap<String, String>) -> Vec<String> {
    env.iter()
        .filter(|(name, value)| {
            let Some(path) = name.strip_prefix("TOLLGATE_") else {
                return false;
            };
            if is_kubernetes_service_link(path, value) {
                return path.contains("__");
            }
            match path.split_once("__") {
                Some((section, _)) => !is_section(section),
                None => SECTIONS.iter().any(|section| {
                    path.len() > section.len()
                        && path.is_char_boundary(section.len())
                        && path[..section.len()].eq_ignore_ascii_case(section)
                        && path.as_bytes()[section.len()] == b'_'
                }),
            }
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Whether `path` (a variable's name after `TOLLGATE_`) and `value` are one of the variables
/// Kubernetes injects for a Service whose name begins `tollgate-`: a name that ends
/// `…_SERVICE_HOST`, `…_SERVICE_PORT[_<PORT NAME>]`, `…_PORT` or
/// `…_PORT_<N>_<TCP|UDP|SCTP>[_ADDR|_PORT|_PROTO]`, with the value Kubernetes gives it (an
/// address, a port number, `tcp://…`, a protocol). A Service named `tollgate-session--redis`
/// injects `TOLLGATE_SESSION__REDIS_SERVICE_HOST=10.96.0.7`, which read as an override was an
/// unknown key, and stopped every start. The value is looked at too, as a key of a map the
/// operator names may end so (`…__REQUIRE__CLAIMS__SSH_PORT='["22"]'` is an override).
fn is_kubernetes_service_link(path: &str, value: &str) -> bool {
    let last = path.rsplit("__").next().unwrap_or(path);
    let address = || value.parse::<std::net::IpAddr>().is_ok();
    let number = || !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit());
    let url = || {
        ["tcp://", "udp://", "sctp://"]
            .iter()
            .any(|scheme| value.starts_with(scheme))
    };
    if last.ends_with("_SERVICE_HOST") {
        return address();
    }
    if last.contains("_SERVICE_PORT") {
        return number();
    }
    // `…_PORT_<N>_TCP_PORT` ends `_PORT` too: the numbered form is looked for first.
    let Some((_, port)) = last
        .rsplit_once("_PORT_")
        .filter(|(_, port)| port.starts_with(|first: char| first.is_ascii_digit()))
    else {
        return last.ends_with("_PORT") && url();
    };
    let mut parts = port.split('_');
    let numbered = parts.next().is_some_and(|number| {
        !number.is_empty() && number.bytes().all(|byte| byte.is_ascii_digit())
    });
    let protocol = parts
        .next()
        .filter(|protocol| ["TCP", "UDP", "SCTP"].contains(protocol));
    let fits = match parts.next() {
        None => url(),
        Some("ADDR") => address(),
        Some("PORT") => number(),
        Some("PROTO") => protocol.is_some_and(|protocol| value.eq_ignore_ascii_case(protocol)),
        Some(_) => false,
    };
    numbered && protocol.is_some() && fits && parts.next().is_none()
}

/// `provider`, `0`, `client_id` → `provider[0].client_id`, as problems spell key paths.
fn key_path(segments: &[String]) -> String {
    let mut path = String::new();
    for segment in segments {
        if segment.parse::<usize>().is_ok() {
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(segment);
        }
    }
    path
}

/// Whether `inner` is `outer` or a key below it.
fn within(inner: &str, outer: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Appends to each problem about a key an override set (or a key above or below it) the
/// variable that set it, so `session.nope: unknown key` says where `nope` came from.
pub(super) fn name_variables(problems: &mut [ConfigProblem], applied: &[Override]) {
    for problem in problems {
        let variables: Vec<&str> = applied
            .iter()
            .filter(|set| within(&set.path, &problem.path) || within(&problem.path, &set.path))
            .map(|set| set.variable.as_str())
            .collect();
        if !variables.is_empty() {
            problem.message = format!("{} (set by {})", problem.message, variables.join(", "));
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
    // One line end after the value is the file's a variable was made from (`kubectl create
    // secret --from-file`, then `secretKeyRef`), as a `_env` secret's is: an admin token or a
    // client secret kept it, and never matched.
    let text = text
        .strip_suffix('\n')
        .map_or(text, |text| text.strip_suffix('\r').unwrap_or(text));
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

    /// What Kubernetes injects into every pod of a namespace with a Service named `tollgate`
    /// (one port, 4180, named `http`), and variables Tollgate reads itself.
    const NOT_OVERRIDES: &[(&str, &str)] = &[
        ("TOLLGATE_SERVICE_HOST", "10.96.12.34"),
        ("TOLLGATE_SERVICE_PORT", "4180"),
        ("TOLLGATE_SERVICE_PORT_HTTP", "4180"),
        ("TOLLGATE_PORT", "tcp://10.96.12.34:4180"),
        ("TOLLGATE_PORT_4180_TCP", "tcp://10.96.12.34:4180"),
        ("TOLLGATE_PORT_4180_TCP_PROTO", "tcp"),
        ("TOLLGATE_PORT_4180_TCP_PORT", "4180"),
        ("TOLLGATE_PORT_4180_TCP_ADDR", "10.96.12.34"),
        ("TOLLGATE_LOG", "debug"),
        ("TOLLGATE_SERVER_SERVICE_HOST", "10.96.0.9"),
    ];

    #[test]
    fn variables_outside_the_config_sections_are_ignored() {
        let text = "[session]\nstore = \"cookie\"";
        let (table, problems) = apply(text, NOT_OVERRIDES);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(table, toml::from_str::<toml::Table>(text).unwrap());
        let mut with_override = NOT_OVERRIDES.to_vec();
        with_override.push(("TOLLGATE_SESSION__STORE", "memory"));
        let (table, problems) = apply(text, &with_override);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(table["session"]["store"].as_str(), Some("memory"));
    }

    #[test]
    fn a_misspelt_section_is_named_and_nothing_else_is() {
        let mut env: BTreeMap<String, String> = NOT_OVERRIDES
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.insert("TOLLGATE_SESSION__STORE".to_owned(), "memory".to_owned());
        assert!(ignored_variables(&env).is_empty(), "{env:?}");
        // A Service named `tollgate-server`: its links are no overrides, nor named.
        for (link, value) in [
            ("TOLLGATE_SERVER_SERVICE_HOST", "10.96.0.7"),
            ("TOLLGATE_SERVER_SERVICE_PORT_HTTP", "4180"),
            ("TOLLGATE_SERVER_PORT", "tcp://10.96.0.7:4180"),
            ("TOLLGATE_SERVER_PORT_4180_TCP_ADDR", "10.96.0.7"),
            ("TOLLGATE_SERVER_PORT_4180_TCP_PROTO", "tcp"),
        ] {
            env.insert(link.to_owned(), value.to_owned());
        }
        assert!(ignored_variables(&env).is_empty(), "{env:?}");
        // One named `tollgate-session--redis`: its links are spelt like overrides, not applied
        // (an unknown key that stopped every start) but named, as an override the operator
        // meant may look the same.
        let links = [
            ("TOLLGATE_SESSION__REDIS_SERVICE_HOST", "10.96.0.8"),
            ("TOLLGATE_SESSION__REDIS_PORT_6379_TCP_PORT", "6379"),
        ];
        let (table, problems) = apply("", &links);
        assert!(problems.is_empty() && table.is_empty(), "{table:?}");
        let named: BTreeMap<String, String> = links
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        assert_eq!(ignored_variables(&named).len(), 2);
        // A map key the operator names may end like a link: an override, whose value is none
        // of a link's.
        let (table, _) = apply(
            "",
            &[("TOLLGATE_ROUTE__0__REQUIRE__CLAIMS__SSH_PORT", "[\"22\"]")],
        );
        assert_eq!(
            table["route"][0]["require"]["claims"]["ssh_port"][0].as_str(),
            Some("22")
        );
        env.insert("TOLLGATE_SESSON__STORE".to_owned(), "redis".to_owned());
        env.insert("TOLLGATE_PROVIDERS__0__NAME".to_owned(), "x".to_owned());
        // Another gateway's spelling, with one underscore: never applied, so named.
        env.insert(
            "TOLLGATE_ROUTE_0_ON_UNAUTHENTICATED".to_owned(),
            "deny".to_owned(),
        );
        env.insert(
            "TOLLGATE_SERVER_TRUSTED_PROXIES".to_owned(),
            "[]".to_owned(),
        );
        assert_eq!(
            ignored_variables(&env),
            [
                "TOLLGATE_PROVIDERS__0__NAME",
                "TOLLGATE_ROUTE_0_ON_UNAUTHENTICATED",
                "TOLLGATE_SERVER_TRUSTED_PROXIES",
                "TOLLGATE_SESSON__STORE"
            ]
        );
    }

    #[test]
    fn every_section_is_recognised_whatever_the_case() {
        for section in SECTIONS {
            assert!(is_section(&section.to_ascii_lowercase()));
        }
        let (table, _) = apply("", &[("TOLLGATE_forward_auth__provider", "x")]);
        assert_eq!(table["forward_auth"]["provider"].as_str(), Some("x"));
        assert!(!is_section("service_host"));
    }

    #[test]
    fn problems_name_the_variable_that_set_the_key() {
        let mut table = toml::Table::new();
        let env = BTreeMap::from([
            ("TOLLGATE_SESSION__NOPE".to_owned(), "1".to_owned()),
            ("TOLLGATE_PROVIDER__0__NAME".to_owned(), "x".to_owned()),
        ]);
        let applied = apply_overrides(&mut table, &env, &mut Vec::new());
        let mut problems = vec![
            ConfigProblem::new("session.nope", "unknown key"),
            ConfigProblem::new("provider[0]", "is wrong"),
            ConfigProblem::new("provider[1].name", "is wrong"),
        ];
        name_variables(&mut problems, &applied);
        assert_eq!(
            problems[0].to_string(),
            "session.nope: unknown key (set by TOLLGATE_SESSION__NOPE)"
        );
        assert!(
            problems[1]
                .message
                .ends_with("(set by TOLLGATE_PROVIDER__0__NAME)")
        );
        assert_eq!(problems[2].message, "is wrong");
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
