//! The engine's layout as the README's "Architecture" section draws it: every top-level
//! module stands on a floor, and every import points down a floor, so no two modules import
//! each other, directly or around a loop. The floors are read from the README's table, so the
//! table and the code cannot drift apart; the imports are read from the source (`crate::x`,
//! `crate::{x, y}`, `$crate::x`, `super::` up to the crate root), comments left out.
//!
//! Run it alone: `cargo nextest run --features crash-injection -E 'test(layout::)'`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Room name (`cli`, `inventory`) → floor, from the README's Architecture table.
fn floors(readme: &str) -> BTreeMap<String, u32> {
    let section = readme
        .split("\n## Architecture")
        .nth(1)
        .expect("README.md has an \"## Architecture\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut floors = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(floor) = cells.get(1).and_then(|c| c.parse::<u32>().ok()) else {
            continue;
        };
        let rooms = cells.get(2).copied().unwrap_or_default();
        for (i, quoted) in rooms.split('`').enumerate() {
            if i % 2 == 1 {
                let name = quoted.trim_end_matches('/').trim_end_matches(".rs");
                floors.insert(name.to_string(), floor);
            }
        }
    }
    floors
}

/// The top-level modules `src/lib.rs` declares.
fn modules(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').trim().to_string())
        })
        .collect()
}

/// The source without comments and without the text of string literals (`""` stays).
fn code_only(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let chars: Vec<char> = source.chars().collect();
    let (mut i, mut in_str, mut block) = (0, false, 0usize);
    while i < chars.len() {
        let (c, next) = (chars[i], chars.get(i + 1).copied());
        if block > 0 {
            if c == '*' && next == Some('/') {
                block -= 1;
                i += 2;
            } else {
                if c == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            continue;
        }
        if in_str {
            if c == '\\' {
                i += 2;
                continue;
            }
            if c == '"' {
                out.push(c);
                in_str = false;
            }
            i += 1;
            continue;
        }
        // A raw string, r"..." or r#"..."#: skipped to its end.
        let word_before = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == 'r' && !word_before {
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            if chars.get(i + 1 + hashes) == Some(&'"') {
                let close: Vec<char> = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let body = i + 2 + hashes;
                let end = (body..chars.len())
                    .find(|&j| chars[j..].starts_with(&close))
                    .map_or(chars.len(), |j| j + close.len());
                out.push_str("\"\"");
                i = end;
                continue;
            }
        }
        match (c, next) {
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                block += 1;
                i += 2;
            }
            // A char literal such as '"' must not open a string.
            ('\'', _) if chars.get(i + 2) == Some(&'\'') => {
                out.extend(&chars[i..i + 3]);
                i += 3;
            }
            ('\'', Some('\\')) => {
                let end = chars[i + 2..]
                    .iter()
                    .position(|&c| c == '\'')
                    .map_or(chars.len(), |p| i + 3 + p);
                out.extend(&chars[i..end]);
                i = end;
            }
            _ => {
                in_str = c == '"';
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first names of the paths after `crate::` in `{a, b::c, d::{e}}`: `a`, `b`, `d`.
fn group_heads(group: &str) -> Vec<String> {
    let (mut depth, mut start, mut heads) = (0, 0, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                heads.push(ident(group[start..i].trim()).to_string());
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                heads.push(ident(group[start..i].trim()).to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    heads
}

/// The top-level names a file reaches through `crate::` or `super::` chains up to the root,
/// with the line each stands on. `depth` is how many modules deep the file is (src/x.rs and
/// src/x/mod.rs: 1; src/x/y.rs: 2).
fn references(code: &str, depth: usize) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                // A group may span lines; read on to its end.
                let offset = code.lines().take(n).map(|l| l.len() + 1).sum::<usize>()
                    + (line.len() - rest.len())
                    + at
                    + "crate::{".len();
                for head in group_heads(&code[offset..]) {
                    found.push((head, n + 1));
                }
                let _ = group;
            } else {
                found.push((ident(after).to_string(), n + 1));
            }
            rest = after;
        }
        let mut rest = line;
        while let Some(at) = rest.find("super::") {
            let preceded = rest[..at].ends_with("super::");
            let mut after = &rest[at..];
            let mut ups = 0;
            while let Some(a) = after.strip_prefix("super::") {
                ups += 1;
                after = a;
            }
            if !preceded && ups == depth {
                found.push((ident(after).to_string(), n + 1));
            }
            rest = &rest[at + "super::".len() * ups..];
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Module → (module it imports → where, as "file:line").
fn imports(modules: &[String]) -> BTreeMap<String, BTreeMap<String, String>> {
    let src = root().join("src");
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for module in modules {
        let mut files = Vec::new();
        let dir = src.join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            files.push(file);
        }
        for file in files {
            let inside = file.strip_prefix(&src).unwrap();
            let mut depth = inside.components().count();
            if inside.file_name().is_some_and(|n| n == "mod.rs") {
                depth -= 1;
            }
            let code = code_only(&std::fs::read_to_string(&file).unwrap());
            for (name, line) in references(&code, depth) {
                if &name != module && modules.contains(&name) {
                    edges
                        .entry(module.clone())
                        .or_default()
                        .entry(name)
                        .or_insert_with(|| format!("src/{}:{line}", inside.display()));
                }
            }
        }
    }
    edges
}

#[test]
fn every_import_points_down_a_floor() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let floors = floors(&readme);
    let modules = modules(&lib);
    assert!(
        modules.len() >= 10,
        "src/lib.rs declares {modules:?}: too few to be the engine"
    );

    let unplaced: Vec<&String> = modules
        .iter()
        .filter(|m| !floors.contains_key(*m))
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules with no floor in the README's Architecture table: {unplaced:?}; add each to the floor it belongs on"
    );
    let gone: Vec<&String> = floors.keys().filter(|r| !modules.contains(r)).collect();
    assert!(
        gone.is_empty(),
        "the README's Architecture table names rooms src/lib.rs does not declare: {gone:?}"
    );

    let edges = imports(&modules);
    let total: usize = edges.values().map(BTreeMap::len).sum();
    assert!(
        total >= 20,
        "only {total} imports found: the reader is broken"
    );
    let mut upward = Vec::new();
    for (from, tos) in &edges {
        for (to, at) in tos {
            if floors[to] >= floors[from] {
                upward.push(format!(
                    "{at}: `{from}` (floor {}) imports `{to}` (floor {})",
                    floors[from], floors[to]
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that do not point down a floor:\n  {}\nmove the shared piece down, or pass it in from above",
        upward.join("\n  ")
    );
}

#[test]
fn the_local_stack_is_reached_only_from_the_cli() {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut outside = BTreeSet::new();
    for file in files {
        let inside = file.strip_prefix(&src).unwrap();
        if inside.starts_with("cli") {
            continue;
        }
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        if code.contains("runbook_stack") {
            outside.insert(inside.display().to_string());
        }
    }
    assert!(
        outside.is_empty(),
        "the engine uses the test stack outside src/cli: {outside:?}"
    );
}

/// The reader itself, on the shapes imports take.
#[test]
fn the_import_reader_sees_every_form() {
    let code = code_only(concat!(
        "use crate::journal::Event;\n",
        "use crate::{error::Error, secret::{Secret, SecretString},\n    value};\n",
        "// use crate::watch; (a comment)\n",
        "let s = \"crate::review // is text\"; let c = '\"'; let d = crate::tls::x();\n",
        "let r = r#\"crate::watch \"quoted\"\"#; let e = crate::inventory::y;\n",
        "fn f() -> super::super::report::Event { $crate::action::y() }\n",
        "use super::sibling;\n",
    ));
    let names: Vec<String> = references(&code, 2).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "journal",
            "error",
            "secret",
            "value",
            "tls",
            "inventory",
            "action",
            "report"
        ],
        "neither a comment nor a string's text counts"
    );
    let table = "# x\n\n## Architecture\n\n| floor | rooms |\n|---|---|\n| 2 | `cli/`, `x.rs` |\n| 1 | `a/` |\n\n## Next\n| 9 | `b/` |\n";
    let floors = floors(table);
    assert_eq!(floors.len(), 3, "{floors:?}");
    assert_eq!((floors["cli"], floors["x"], floors["a"]), (2, 2, 1));
}
