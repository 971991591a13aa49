//! Doorman's layering, checked (docs/ARCHITECTURE.md, "Layers"). A top-level module may use
//! only modules of lower layers, never one of its own layer or above, and the files inside a
//! module never import each other in a cycle. Test code (`#[cfg(test)]` items, `*_tests.rs`,
//! `testing.rs`) is not checked: tests may reach anywhere.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Lowest first. Each module may use the modules of the layers before its own.
const LAYERS: &[&[&str]] = &[
    // Foundation: no dependencies inside the crate.
    &["clock", "crypto", "log_batch", "metrics", "protocol"],
    &["config"],
    &["store", "net"],
    &["web", "audit", "policy"],
    // Features.
    &["sign_in", "vault"],
    // The MCP endpoint, which composes them.
    &["gateway"],
    &["edge", "listener", "console"],
    // Entry points.
    &["server", "cli"],
    // The fuzzing harness builds the app as `serve` does.
    &["fuzz"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The source without comments, string and char literals, and `#[cfg(test)]` items.
fn code_of(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &src[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if rest.starts_with("r#\"") {
            i += rest.find("\"#").map_or(rest.len(), |e| e + 2);
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && rest.len() > 2 && (b[i + 1] == b'\\' || b[i + 2] == b'\'') {
            // A char literal (a lifetime has no closing quote right after one character).
            let close = rest[2..].find('\'').map_or(rest.len(), |e| e + 3);
            i += close;
            out.push_str("' '");
        } else if rest.starts_with("#[cfg(test)]") {
            i += "#[cfg(test)]".len() + item_len(&src[i + "#[cfg(test)]".len()..]);
        } else {
            let c = rest.chars().next().expect("not at the end");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of the item at the start of `s`: up to its `;`, or its balanced `{…}` block.
fn item_len(s: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            ';' if depth == 0 => return i + 1,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// The first path segments after each `{prefix}::` (`crate::a`, `crate::{a, b::c}`).
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let needle = format!("{prefix}::");
    let mut from = 0;
    while let Some(at) = code[from..].find(&needle) {
        let start = from + at;
        let after = start + needle.len();
        from = after;
        // Only whole paths: `super::` must not be the tail of another identifier.
        if start > 0 {
            let before = code.as_bytes()[start - 1];
            if before.is_ascii_alphanumeric() || before == b'_' {
                continue;
            }
        }
        let rest = &code[after..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut at_item = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => at_item = true,
                    c if at_item && depth == 1 && (c.is_ascii_alphabetic() || c == '_') => {
                        names.insert(ident(&group[i..]));
                        at_item = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with("tests.rs") || name == "testing.rs"
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && !is_test_file(&path) {
            out.push(path);
        }
    }
}

/// A source tree: (path relative to `src`, code).
fn sources(src: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let code = code_of(&fs::read_to_string(&p).expect("readable source"));
            (p.strip_prefix(src).expect("under src").to_path_buf(), code)
        })
        .collect()
}

fn top_module(rel: &Path) -> String {
    let first = rel.components().next().expect("a path").as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_owned()
}

/// Every use of a module of the same or a higher layer: "file: a uses b".
fn layer_violations(files: &[(PathBuf, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (rel, code) in files {
        let me = top_module(rel);
        if me == "lib" || me == "main" {
            continue;
        }
        let Some(mine) = layer_of(&me) else {
            out.push(format!(
                "{}: module `{me}` has no layer in tests/layers.rs",
                rel.display()
            ));
            continue;
        };
        for used in names_after(code, "crate") {
            if used == me {
                continue;
            }
            match layer_of(&used) {
                Some(theirs) if theirs < mine => {}
                Some(_) => out.push(format!(
                    "{}: `{me}` uses `{used}`, which is not in a lower layer",
                    rel.display()
                )),
                // Not a module (`crate::SomeType` re-exported at the root): nothing to check.
                None => {}
            }
        }
    }
    out
}

/// Import cycles among the files of one module (its `mod.rs` is its interface and is left out).
fn sibling_cycles(files: &[(PathBuf, String)]) -> Vec<String> {
    let mut by_dir: BTreeMap<PathBuf, BTreeMap<String, &str>> = BTreeMap::new();
    for (rel, code) in files {
        let (Some(dir), Some(stem)) = (rel.parent(), rel.file_stem()) else {
            continue;
        };
        let stem = stem.to_string_lossy().into_owned();
        if dir.as_os_str().is_empty() || stem == "mod" {
            continue;
        }
        by_dir
            .entry(dir.to_path_buf())
            .or_default()
            .insert(stem, code);
    }
    let mut out = Vec::new();
    for (dir, mods) in by_dir {
        let parent = dir.to_string_lossy().replace('/', "::");
        let edges: BTreeMap<&str, BTreeSet<String>> = mods
            .iter()
            .map(|(m, code)| {
                let mut used = names_after(code, "super");
                used.extend(names_after(code, &format!("crate::{parent}")));
                used.retain(|u| u != m && mods.contains_key(u));
                (m.as_str(), used)
            })
            .collect();
        for (a, targets) in &edges {
            for b in targets {
                // Does b lead back to a?
                let mut seen = BTreeSet::new();
                let mut stack = vec![b.clone()];
                while let Some(n) = stack.pop() {
                    if n == *a {
                        out.push(format!("{}: {a} → {b} → … → {a}", dir.display()));
                        break;
                    }
                    if seen.insert(n.clone())
                        && let Some(next) = edges.get(n.as_str())
                    {
                        stack.extend(next.iter().cloned());
                    }
                }
            }
        }
    }
    out
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_module_uses_only_lower_layers() {
    let violations = layer_violations(&sources(&src_dir()));
    assert!(
        violations.is_empty(),
        "layering broken (see docs/ARCHITECTURE.md):\n{}",
        violations.join("\n")
    );
}

#[test]
fn no_import_cycles_inside_a_module() {
    let cycles = sibling_cycles(&sources(&src_dir()));
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// The checks themselves: they see through comments, strings and test code, read grouped
/// imports, and catch an upward use and a cycle.
#[test]
fn the_checks_catch_what_they_are_for() {
    let code = code_of(
        "use crate::{config::Config, store::{self, Store}};\n\
         // crate::gateway in a comment\n\
         let s = \"crate::server in a string\"; let c = '\"'; fn f<'a>(x: &'a str) {}\n\
         use crate::vault;\n\
         #[cfg(test)]\nmod tests { use crate::server; }\n\
         #[cfg(test)]\npub(crate) mod testing;\n\
         fn g() { crate::gateway::call(); }",
    );
    let names: Vec<String> = names_after(&code, "crate").into_iter().collect();
    assert_eq!(names, ["config", "gateway", "store", "vault"]);

    let files = vec![
        (PathBuf::from("store/mod.rs"), code_of("use crate::clock;")),
        (
            PathBuf::from("config/mod.rs"),
            code_of("use crate::vault::x;"),
        ),
        (PathBuf::from("web/mod.rs"), code_of("use crate::audit;")),
    ];
    assert_eq!(
        layer_violations(&files),
        [
            "config/mod.rs: `config` uses `vault`, which is not in a lower layer",
            "web/mod.rs: `web` uses `audit`, which is not in a lower layer",
        ]
    );

    let files = vec![
        (
            PathBuf::from("sign_in/authorize.rs"),
            code_of("use super::{federation::go, AuthServer};"),
        ),
        (
            PathBuf::from("sign_in/federation.rs"),
            code_of("use crate::sign_in::authorize::load;"),
        ),
        (
            PathBuf::from("sign_in/mod.rs"),
            code_of("pub mod authorize;"),
        ),
    ];
    assert_eq!(
        sibling_cycles(&files),
        [
            "sign_in: authorize → federation → … → authorize",
            "sign_in: federation → authorize → … → federation"
        ]
    );
}
