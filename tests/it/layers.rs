//! The layering rule of `src/`: a module names only modules of its own layer
//! or below, and no two modules import each other through any path. The
//! layer order is written here once; `src/lib.rs` documents it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top. A top-level module of `src/` must be in exactly one layer.
const LAYERS: &[&[&str]] = &[
    &["fs", "clock", "process", "version", "chain"],
    &["config"],
    &["source"],
    &["verify"],
    &["store"],
    &["ops"],
    &["daemon"],
    &["cli"],
];

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

/// Non-test code of a file: everything before the first `#[cfg(test)]`.
fn code(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// Removes `//` comments so prose may name any module.
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b` path a file names, as `a::b...` (use trees expanded).
fn crate_paths(text: &str) -> Vec<String> {
    let text = strip_comments(code(text));
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `switchyard_crate::`
        }
        if rest.starts_with('{') {
            let end = matching_brace(rest);
            for item in split_top(&rest[1..end]) {
                expand(&item, "", &mut out);
            }
            rest = &rest[end..];
        } else {
            let p: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(p.trim_end_matches(':').to_string());
        }
    }
    out
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    s.len()
}

fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.split_whitespace().collect::<String>())
        .filter(|s| !s.is_empty())
        .collect()
}

fn expand(item: &str, prefix: &str, out: &mut Vec<String>) {
    if let Some(i) = item.find("::{") {
        let inner = &item[i + 3..item.len() - 1];
        let p = format!("{prefix}{}::", &item[..i]);
        for sub in split_top(inner) {
            expand(&sub, &p, out);
        }
    } else {
        out.push(format!("{prefix}{item}").trim_end_matches(':').to_string());
    }
}

/// The module a path names: the longest known module prefixing it.
fn resolve(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// Upward edges `(from, to)` of a set of modules and their sources.
fn upward(sources: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    let mut bad = Vec::new();
    for (m, text) in sources {
        let from = layer_of(m.split("::").next().unwrap());
        for p in crate_paths(text) {
            let Some(to) = resolve(&p, &modules) else {
                continue;
            };
            let to_layer = layer_of(to.split("::").next().unwrap());
            if to_layer > from && !bad.contains(&(m.clone(), p.clone())) {
                bad.push((m.clone(), p));
            }
        }
    }
    bad
}

/// Modules on an import cycle (Tarjan's strongly connected components).
fn cycles(sources: &BTreeMap<String, String>) -> Vec<Vec<String>> {
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    let names: Vec<&String> = modules.iter().collect();
    let index_of = |m: &str| names.iter().position(|n| *n == m).unwrap();
    let edges: Vec<BTreeSet<usize>> = names
        .iter()
        .map(|m| {
            crate_paths(&sources[*m])
                .iter()
                .filter_map(|p| resolve(p, &modules))
                .filter(|t| t != *m && !m.starts_with(&format!("{t}::")))
                .map(|t| index_of(&t))
                .collect()
        })
        .collect();
    struct T<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(t: &mut T<'_>, v: usize) {
        t.index[v] = Some(t.next);
        t.low[v] = t.next;
        t.next += 1;
        t.stack.push(v);
        t.on[v] = true;
        for &w in &t.edges[v] {
            match t.index[w] {
                None => {
                    visit(t, w);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(i) if t.on[w] => t.low[v] = t.low[v].min(i),
                _ => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut c = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on[w] = false;
                c.push(w);
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                t.out.push(c);
            }
        }
    }
    let n = names.len();
    let mut t = T {
        edges: &edges,
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(&mut t, v);
        }
    }
    t.out
        .into_iter()
        .map(|c| {
            let mut c: Vec<String> = c.into_iter().map(|i| names[i].clone()).collect();
            c.sort();
            c
        })
        .collect()
}

/// `src/a.rs` -> `a`, `src/d/x.rs` -> `d::x`, `src/d/mod.rs` -> `d`.
fn read_sources(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            let mut pre = prefix.to_vec();
            pre.push(name);
            read_sources(&p, &pre, out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let mut parts = prefix.to_vec();
            if stem != "mod" {
                parts.push(stem.to_string());
            }
            if parts.is_empty() || parts == ["lib"] || parts == ["main"] {
                continue;
            }
            out.insert(parts.join("::"), std::fs::read_to_string(&p).unwrap());
        }
    }
}

fn project_sources() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    read_sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut out,
    );
    out
}

#[test]
fn every_top_level_module_has_a_layer() {
    let tops: BTreeSet<String> = project_sources()
        .keys()
        .map(|m| m.split("::").next().unwrap().to_string())
        .collect();
    let missing: Vec<_> = tops.iter().filter(|t| layer_of(t).is_none()).collect();
    assert!(
        missing.is_empty(),
        "modules with no layer in LAYERS: {missing:?}"
    );
}

#[test]
fn no_module_names_a_layer_above_its_own() {
    let bad = upward(&project_sources());
    assert!(
        bad.is_empty(),
        "upward imports (move the item down, or pass it in from above):\n{}",
        bad.iter()
            .map(|(m, p)| format!("  {m} -> crate::{p}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn no_import_cycles() {
    let c = cycles(&project_sources());
    assert!(c.is_empty(), "import cycles: {c:?}");
}

/// The checker itself: an upward import and a cycle are found.
#[test]
fn the_checker_finds_upward_imports_and_cycles() {
    let mut s = BTreeMap::new();
    s.insert(
        "config".to_string(),
        "use crate::ops::deploy::Session;\n".to_string(),
    );
    s.insert("ops".to_string(), String::new());
    s.insert(
        "ops::deploy".to_string(),
        "use crate::{config::AppConfig, fs};".to_string(),
    );
    s.insert(
        "fs".to_string(),
        "// crate::cli is only named in a comment\n".to_string(),
    );
    s.insert(
        "cli".to_string(),
        "fn f() { crate::ops::deploy::run() }\n#[cfg(test)]\nuse crate::daemon;".to_string(),
    );
    let bad = upward(&s);
    assert_eq!(
        bad,
        vec![("config".to_string(), "ops::deploy::Session".to_string())]
    );
    assert_eq!(
        cycles(&s),
        vec![vec!["config".to_string(), "ops::deploy".to_string()]]
    );
}
