//! House rules read from the source, as rust-analyzer's tidy test does: every file opens with
//! a `//!` line saying what it owns, and no module imports from a higher layer than its own,
//! by the layer table in ARCHITECTURE.md ("Code map"). Imports are every `crate::…` path in
//! code (a `use` line or a path written inline), comments and tests left out.
//!
//! Nor may two files import each other, directly or round a loop of others: a cycle inside
//! one layer is as knotted as an upward import.
//!
//! And `fuzz/Cargo.lock` (the fuzz crate's own lock, used only when the fuzz targets are built)
//! must list every dependency of Tollgate's build, and hold every package it shares with
//! `Cargo.lock` at `Cargo.lock`'s version: a dependency added without it makes the fuzz build
//! in CI rewrite the lock and leave the checkout modified, and a version that drifted would
//! fuzz code Tollgate does not ship.
//!
//! Upward imports that exist today are listed in `KNOWN_UPWARD` with the issue that removes
//! them: the test fails on any new one, and on a listed one that is gone (so the list only
//! shrinks).

// Test code may panic on what it did not expect: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `(importing module, imported table entry)` pairs that run upward today, each with the
/// issue that removes it. Empty: issue 11 handed the surfaces sub-states instead of the whole
/// `AppState`, so nothing imports the wiring; keep it so.
const KNOWN_UPWARD: &[(&str, &str)] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// `src/session/store.rs` → `session::store`; `mod.rs` and `lib.rs` name their folder.
fn module_of(file: &Path) -> String {
    let relative = file.strip_prefix(root().join("src")).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The layer table: (layer number, module prefixes), from ARCHITECTURE.md's "Code map".
fn layers() -> Vec<(u8, Vec<String>)> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let table = text
        .split("## Code map")
        .nth(1)
        .expect("ARCHITECTURE.md has a Code map");
    let mut layers = Vec::new();
    for line in table.lines().filter(|line| line.starts_with("| ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(number) = cells
            .get(1)
            .and_then(|cell| cell.split_whitespace().next())
            .and_then(|word| word.parse::<u8>().ok())
        else {
            continue;
        };
        let modules = cells[2]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|module| module.split_whitespace().next().unwrap_or("").to_owned())
            .filter(|module| !module.is_empty())
            .collect();
        layers.push((number, modules));
    }
    assert!(layers.len() >= 4, "no layer table found in ARCHITECTURE.md");
    layers
}

/// The layer of `module` and the table entry that places it: the longest listed prefix.
fn placed<'a>(layers: &'a [(u8, Vec<String>)], module: &str) -> Option<(u8, &'a str)> {
    layers
        .iter()
        .flat_map(|(number, modules)| modules.iter().map(move |prefix| (*number, prefix)))
        .filter(|(_, prefix)| {
            module == prefix.as_str()
                || module
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.starts_with("::"))
        })
        .max_by_key(|(_, prefix)| prefix.len())
        .map(|(number, prefix)| (number, prefix.as_str()))
}

/// The code of a file without comments and without its `#[cfg(test)]` module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module a file's code names through `crate::`, including `use crate::{a, b::c}`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let path: String = item
                    .trim()
                    .chars()
                    .take_while(|c| is_name(*c) || *c == ':')
                    .collect();
                if !path.is_empty() {
                    found.insert(path.trim_end_matches(':').to_owned());
                }
            }
            continue;
        }
        let path: String = rest
            .chars()
            .take_while(|c| is_name(*c) || *c == ':')
            .collect();
        found.insert(path.trim_end_matches(':').to_owned());
    }
    found
}

#[test]
fn every_source_file_says_what_it_owns() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.trim_start().starts_with("//!"),
            "{} does not open with a //! line",
            file.display()
        );
    }
}

#[test]
fn no_module_imports_from_a_higher_layer() {
    let layers = layers();
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut upward = BTreeSet::new();
    let mut unplaced = BTreeSet::new();
    for file in files {
        let module = module_of(&file);
        if matches!(module.as_str(), "lib" | "main") {
            continue;
        }
        let Some((own, _)) = placed(&layers, &module) else {
            unplaced.insert(module);
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for imported in imports(&code(&text)) {
            let Some((theirs, entry)) = placed(&layers, &imported) else {
                // A re-exported item (`crate::hash_password`) or a module the table misses.
                if imported.contains("::") {
                    unplaced.insert(imported);
                }
                continue;
            };
            if theirs > own {
                upward.insert((module.clone(), entry.to_owned()));
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules missing from ARCHITECTURE.md's layer table: {unplaced:?}"
    );
    let known: BTreeSet<(String, String)> = KNOWN_UPWARD
        .iter()
        .map(|(from, to)| ((*from).to_owned(), (*to).to_owned()))
        .collect();
    let new: Vec<_> = upward.difference(&known).collect();
    let gone: Vec<_> = known.difference(&upward).collect();
    assert!(new.is_empty(), "imports from a higher layer: {new:#?}");
    assert!(
        gone.is_empty(),
        "fixed, so remove them from KNOWN_UPWARD: {gone:#?}"
    );
}

/// The file module an imported path lands in: the longest prefix of `path` that is a module of
/// `src/` (`metrics::Metrics` → `metrics`, `session::store::Store` → `session::store`).
fn landing<'a>(modules: &'a BTreeSet<String>, path: &str) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .find_map(|length| modules.get(&parts[..length].join("::")))
}

#[test]
fn no_two_files_import_each_other_round_a_loop() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let modules: BTreeSet<String> = files.iter().map(|file| module_of(file)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        let text = std::fs::read_to_string(file).unwrap();
        let targets = edges.entry(module.clone()).or_default();
        for imported in imports(&code(&text)) {
            if let Some(target) = landing(&modules, &imported)
                && *target != module
            {
                targets.insert(target.clone());
            }
        }
    }
    // A module is on a loop when it can reach itself; the loop is every module it reaches
    // that reaches it back.
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(next) = stack.pop() {
            for target in edges.get(&next).into_iter().flatten() {
                if seen.insert(target.clone()) {
                    stack.push(target.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> = modules
        .iter()
        .map(|module| (module, reach(module)))
        .collect();
    let loops: BTreeSet<Vec<&String>> = modules
        .iter()
        .filter(|module| reached[module].contains(*module))
        .map(|module| {
            reached[module]
                .iter()
                .filter_map(|other| reached.get_key_value(other).map(|(name, _)| *name))
                .filter(|other| reached[other].contains(module))
                .collect()
        })
        .collect();
    assert!(loops.is_empty(), "files that import each other: {loops:#?}");
}

/// A lock file's packages, as (name, version), and the `tollgate` package's dependencies
/// resolved the same way.
struct Lock {
    packages: BTreeSet<(String, String)>,
    tollgate: BTreeSet<(String, String)>,
}

fn lock(file: &str) -> Lock {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let entries = table["package"].as_array().unwrap();
    let text_of = |package: &toml::Value, key: &str| package[key].as_str().unwrap().to_owned();
    let packages: BTreeSet<(String, String)> = entries
        .iter()
        .map(|package| (text_of(package, "name"), text_of(package, "version")))
        .collect();
    let tollgate = entries
        .iter()
        .find(|package| package["name"].as_str() == Some("tollgate"))
        .unwrap_or_else(|| panic!("{file} has no `tollgate` package"));
    let dependencies = tollgate.get("dependencies").and_then(toml::Value::as_array);
    let tollgate = dependencies
        .into_iter()
        .flatten()
        .map(|entry| {
            // `name` when the lock holds one version of it, else `name version`.
            let entry = entry.as_str().unwrap();
            match entry.split_once(' ') {
                Some((name, version)) => (name.to_owned(), version.to_owned()),
                None => packages
                    .iter()
                    .find(|(name, _)| name == entry)
                    .unwrap_or_else(|| panic!("{file}: no package {entry}"))
                    .clone(),
            }
        })
        .collect();
    Lock { packages, tollgate }
}

/// The packages Tollgate's manifest names outside `[dev-dependencies]` (what a build of the
/// library resolves, and so what the fuzz crate's lock holds), by package name.
fn built_dependencies() -> BTreeSet<String> {
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    let mut tables: Vec<&toml::Table> = ["dependencies", "build-dependencies"]
        .iter()
        .filter_map(|key| manifest.get(*key).and_then(toml::Value::as_table))
        .collect();
    for target in manifest
        .get("target")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flat_map(toml::Table::values)
    {
        for key in ["dependencies", "build-dependencies"] {
            tables.extend(target.get(key).and_then(toml::Value::as_table));
        }
    }
    tables
        .into_iter()
        .flat_map(|table| {
            table.iter().map(|(key, value)| {
                let renamed = value.get("package").and_then(toml::Value::as_str);
                renamed.unwrap_or(key).to_owned()
            })
        })
        .collect()
}

#[test]
fn the_fuzz_lock_resolves_what_it_shares_with_the_main_lock_alike() {
    let (main, fuzz) = (lock("Cargo.lock"), lock("fuzz/Cargo.lock"));
    let mut problems = Vec::new();
    // Every dependency a build of Tollgate uses is in the fuzz lock: one added without it is
    // what makes the fuzz build rewrite the lock.
    let listed: BTreeSet<&String> = fuzz.tollgate.iter().map(|(name, _)| name).collect();
    for name in built_dependencies() {
        if !listed.contains(&name) {
            problems.push(format!("`tollgate` does not depend on {name} there"));
        }
    }
    // Every package both locks hold, at the versions Cargo.lock holds (so the fuzzers run what
    // ships); packages only the fuzz crate uses (libFuzzer's) are its own.
    let main_names: BTreeSet<&String> = main.packages.iter().map(|(name, _)| name).collect();
    for (name, version) in &fuzz.packages {
        let pair = (name.clone(), version.clone());
        if main_names.contains(name) && !main.packages.contains(&pair) {
            problems.push(format!("{name} {version}, which Cargo.lock does not hold"));
        }
    }
    assert!(
        problems.is_empty(),
        "fuzz/Cargo.lock is stale: {}.\nCopy Cargo.lock over it, let cargo prune it (`cargo \
         metadata --manifest-path fuzz/Cargo.toml --format-version 1 >/dev/null`) and commit it",
        problems.join("; ")
    );
}

/// Every fuzz target the library names (`tollgate::fuzz_targets::TARGETS`, which the stable
/// runner uses) has its libFuzzer binary in `fuzz/Cargo.toml`, its entry file, its corpus, and
/// its place in `scripts/fuzz.sh`, and nothing else is listed there: a target added to one
/// list alone was never fuzzed by libFuzzer.
#[test]
fn every_fuzz_target_is_listed_everywhere_it_runs() {
    let named: BTreeSet<&str> = tollgate::fuzz_targets::TARGETS
        .iter()
        .map(|(name, _)| *name)
        .collect();
    let manifest = std::fs::read_to_string(root().join("fuzz/Cargo.toml")).unwrap();
    let bins: BTreeSet<&str> = manifest
        .lines()
        .filter_map(|line| line.strip_prefix("name = \""))
        .filter_map(|rest| rest.strip_suffix('"'))
        .filter(|name| *name != "tollgate-fuzz")
        .collect();
    assert_eq!(bins, named, "fuzz/Cargo.toml's [[bin]]s");
    let script = std::fs::read_to_string(root().join("scripts/fuzz.sh")).unwrap();
    let listed: BTreeSet<&str> = script
        .lines()
        .find_map(|line| line.strip_prefix("targets=("))
        .and_then(|rest| rest.strip_suffix(')'))
        .expect("scripts/fuzz.sh names its targets")
        .split_whitespace()
        .collect();
    assert_eq!(listed, named, "scripts/fuzz.sh's targets");
    for name in named {
        assert!(
            manifest.contains(&format!(
                "name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\"\n"
            )),
            "{name}'s [[bin]] is not fuzz_targets/{name}.rs"
        );
        let entry = std::fs::read_to_string(root().join(format!("fuzz/fuzz_targets/{name}.rs")))
            .unwrap_or_else(|error| panic!("{name} has no entry file: {error}"));
        assert!(
            entry.contains(&format!("*name == \"{name}\"")),
            "fuzz/fuzz_targets/{name}.rs runs another target"
        );
        assert!(
            root().join(format!("fuzz/corpus/{name}")).is_dir(),
            "{name} has no corpus"
        );
    }
}
