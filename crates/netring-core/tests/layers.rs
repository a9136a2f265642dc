//! The engine's modules form layers: each uses only modules below it, so
//! the dependency graph of `netring-core`'s top-level modules has no cycle.
//! This test reads the sources, collects every `crate::` path (in `use`
//! items and inline), and fails with the cycle if one comes back.
//!
//! A top-level module is a file `src/x.rs` or a directory `src/x/`; paths
//! inside one module (`super::`, `self::`) are its own business.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`None`: the crate root).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib").then_some(name)
}

/// Code without comments (line comments, doc comments, block comments).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_block = 0usize;
    for line in text.lines() {
        let mut rest = line;
        let mut kept = String::new();
        loop {
            if in_block > 0 {
                match rest.find("*/") {
                    Some(i) => {
                        in_block -= 1;
                        rest = &rest[i + 2..];
                    }
                    None => break,
                }
            } else {
                let line_c = rest.find("//");
                let block_c = rest.find("/*");
                match (line_c, block_c) {
                    (Some(l), b) if b.is_none_or(|b| l < b) => {
                        kept.push_str(&rest[..l]);
                        break;
                    }
                    (_, Some(b)) => {
                        kept.push_str(&rest[..b]);
                        in_block += 1;
                        rest = &rest[b + 2..];
                    }
                    _ => {
                        kept.push_str(rest);
                        break;
                    }
                }
            }
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// The top-level modules a piece of code names through `crate::`.
fn uses(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `netring_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c}`: the first segment of each item (nested
            // braces belong to the item before them).
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        let name = ident(&group[j..]);
                        if !name.is_empty() {
                            found.insert(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut modules = BTreeSet::new();
    for f in &files {
        if let Some(m) = module_of(&src, f) {
            modules.insert(m);
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(from) = module_of(&src, f) else {
            continue;
        };
        let code = strip_comments(&std::fs::read_to_string(f).expect("read source"));
        let entry = edges.entry(from.clone()).or_default();
        for to in uses(&code) {
            if to != from && modules.contains(&to) {
                entry.insert(to);
            }
        }
    }
    edges
}

/// A cycle in `edges`, as the path of modules around it.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(n.to_string(), Mark::Open);
        path.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match marks.get(m).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let start = path.iter().position(|p| p == m).expect("on path");
                    let mut cycle = path[start..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(m, edges, marks, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in edges.keys() {
        if marks.get(n).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(c) = visit(n, edges, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn engine_modules_have_no_cycle() {
    let edges = graph();
    assert!(edges.len() > 10, "modules not found: {edges:?}");
    if let Some(cycle) = find_cycle(&edges) {
        panic!(
            "module cycle in netring-core: {}\nedges: {edges:#?}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_checker_sees_uses_and_cycles() {
    let code = strip_comments(
        "use crate::a::X; // crate::z\nuse crate::{b, c::{D, E}};\nlet x = crate::d::f(); /* crate::y */",
    );
    let found: Vec<String> = uses(&code).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "d"]);
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    edges.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    edges.insert("c".to_string(), BTreeSet::new());
    assert_eq!(find_cycle(&edges), None);
    edges.get_mut("c").unwrap().insert("a".to_string());
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

/// The layer order stated in `lib.rs`: a module may use only those in
/// lower layers (or its own). Fails when an edge goes up or sideways
/// within a layer where the map says it should not.
#[test]
fn modules_use_only_lower_layers() {
    let layers: &[&[&str]] = &[
        &[
            "error",
            "config",
            "stats",
            "sync",
            "memory",
            "limits",
            "housekeeping",
            "prefetch",
            "framing",
            "layer",
        ],
        &["driver"],
        &["flow"],
        &["conn"],
        &["udp"],
        &["timer", "mailbox"],
        &["shared"],
        &["core"],
        &["handle"],
        &["event"],
        &["io_thread"],
        &["engine"],
        &["machine_tests"],
    ];
    let level = |m: &str| layers.iter().position(|l| l.contains(&m));
    let edges = graph();
    let mut wrong = Vec::new();
    for (from, tos) in &edges {
        let Some(lf) = level(from) else {
            wrong.push(format!("{from}: not in the layer map"));
            continue;
        };
        for to in tos {
            match level(to) {
                None => wrong.push(format!("{to}: not in the layer map")),
                Some(lt) if lt > lf => {
                    wrong.push(format!("{from} (layer {lf}) uses {to} (layer {lt})"))
                }
                Some(lt) if lt == lf && lf != 0 => {
                    wrong.push(format!("{from} uses {to} in its own layer {lf}"))
                }
                _ => {}
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}
