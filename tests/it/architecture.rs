//! The layering ARCHITECTURE.md promises, checked: what each crate may depend on (from
//! `cargo metadata`), what the pure domain's sources may name, and a codemap that names every
//! source file that exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every workspace crate and its dependencies: (name, kind) with kind `normal`, `dev` or
/// `build`.
fn dependencies() -> BTreeMap<String, Vec<(String, String)>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
                    (d["name"].as_str().unwrap().to_owned(), kind)
                })
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

/// The tracked files under `dir` with one of `extensions`.
fn sources(dir: &str, extensions: &[&str]) -> Vec<PathBuf> {
    let output = std::process::Command::new("git")
        .args(["ls-files", dir])
        .current_dir(ROOT)
        .output()
        .unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|f| extensions.iter().any(|e| f.ends_with(e)))
        .map(|f| Path::new(ROOT).join(f))
        .collect()
}

/// The lines of a source file outside its `#[cfg(test)] mod … { … }` blocks, numbered from 0
/// (braces counted, which the sources checked here keep out of strings and comments).
fn non_test_lines(text: &str) -> Vec<(usize, &str)> {
    let mut kept = Vec::new();
    let (mut test_attribute, mut depth) = (false, 0usize);
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if depth == 0 && trimmed.starts_with("#[cfg(test)]") {
            test_attribute = true;
            continue;
        }
        if test_attribute && depth == 0 {
            if trimmed.starts_with("mod ") && trimmed.ends_with('{') {
                depth = 1;
                continue;
            }
            test_attribute = false;
        }
        if depth > 0 {
            depth += line.matches('{').count();
            depth -= line.matches('}').count().min(depth);
            if depth == 0 {
                test_attribute = false;
            }
            continue;
        }
        kept.push((n, line));
    }
    kept
}

#[test]
fn crates_depend_only_on_what_their_layer_allows() {
    let deps = dependencies();
    let mut wrong = Vec::new();
    for (krate, list) in &deps {
        for (dep, kind) in list {
            let allowed = match dep.as_str() {
                "sled" | "postgres" | "r2d2" | "r2d2_postgres" | "refinery" => {
                    krate == "tally-store"
                }
                "bincode" => krate == "proto-schemas",
                _ => true,
            };
            let forbidden_here = match krate.as_str() {
                // The pure core: no I/O, no serialization, no other tally crate.
                "tally-domain" => {
                    kind == "normal"
                        && !matches!(dep.as_str(), "chrono" | "imbl" | "thiserror" | "uuid")
                }
                "proto-schemas" => dep.starts_with("tally-"),
                // Only the domain's values and serde: no I/O, no storage.
                "tally-json" => {
                    kind == "normal"
                        && !matches!(dep.as_str(), "tally-domain" | "serde" | "serde_json")
                }
                "tally-store" => matches!(dep.as_str(), "tally-engine" | "tally-http"),
                "tally-engine" => matches!(dep.as_str(), "tally-http" | "axum" | "hyper" | "sled"),
                // The edge reaches the log only through the engine (its tests may use a store).
                "tally-http" => kind == "normal" && matches!(dep.as_str(), "tally-store" | "sled"),
                _ => false,
            };
            if !allowed || forbidden_here {
                wrong.push(format!("{krate} depends on {dep} ({kind})"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The check sees what it checks.
    assert!(deps["tally-store"].iter().any(|(d, _)| d == "sled"));
    assert!(deps["proto-schemas"].iter().any(|(d, _)| d == "bincode"));
}

#[test]
fn the_domain_names_no_io_clock_or_randomness_and_the_edge_no_store() {
    let rules: [(&str, &[&str]); 2] = [
        (
            "crates/tally-domain/src",
            &[
                "std::fs",
                "std::net",
                "std::thread",
                "tokio",
                "SystemTime",
                "Utc::now",
                "Instant::now",
                "rand::",
                "serde",
                "sled",
                "bincode",
            ],
        ),
        (
            "crates/tally-http/src",
            &["tally_store", "sled::", "bincode"],
        ),
    ];
    let mut wrong = Vec::new();
    for (dir, forbidden) in rules {
        for file in sources(dir, &[".rs"]) {
            let name = file.to_string_lossy();
            // Unit tests may build what they need (a store behind the engine, say).
            if name.ends_with("tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in non_test_lines(&text) {
                for word in forbidden {
                    if line.contains(word) && !line.trim_start().starts_with("//") {
                        wrong.push(format!("{}:{}: {word}", name, n + 1));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_codemap_names_every_source_file() {
    let map = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    for dir in ["src", "crates", "proto-schemas", "tests"] {
        for file in sources(dir, &[".rs", ".py"]) {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            if !map.contains(&format!("`{name}`")) && !map.contains(&name) {
                missing.push(file.strip_prefix(ROOT).unwrap().display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names none of {missing:#?}"
    );
}
