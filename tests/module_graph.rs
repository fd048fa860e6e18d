//! The top-level modules of `src/` form no cycle: data flows one way (plan file → checked plan → run →
//! report), and no module reaches back. Read from the source: every `crate::name` path outside
//! comments is an edge from the module whose file holds it to the top-level module `name`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module names that `text` refers to with `crate::…`, including `use crate::{a, b::c}`.
fn references(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a::X, b}`: the group may span lines; take what this line holds.
                for part in group.split([',', '}']) {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        refs.insert(name);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    refs.insert(name);
                }
            }
        }
    }
    refs
}

/// Module → the top-level modules it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut files = Vec::new();
        if p.is_dir() {
            rust_files(&p, &mut files);
        } else {
            files.push(p.clone());
        }
        let entry: &mut BTreeSet<String> = modules.entry(name.clone()).or_default();
        for f in files {
            entry.extend(references(&std::fs::read_to_string(f).unwrap()));
        }
        entry.remove(&name);
    }
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    for deps in modules.values_mut() {
        deps.retain(|d| known.contains(d));
    }
    modules
}

/// A cycle of the graph, if it has one.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for d in &g[n] {
            match state.get(d.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == d).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(d.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(d, g, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0
            && let Some(c) = visit(n, g, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_reader_sees_paths_and_groups_but_not_comments() {
    let refs = references(
        "use crate::{api::JobId, money};\nlet x = crate::plan::load(p); // crate::exec is not used\n",
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        vec!["api", "money", "plan"]
    );
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(find_cycle(&g).unwrap(), vec!["a", "b", "c", "a"]);
    g.insert("c".to_string(), BTreeSet::new());
    assert_eq!(find_cycle(&g), None);
}

#[test]
fn the_top_level_modules_form_no_cycle() {
    let g = graph();
    assert!(g.contains_key("plan") && g.contains_key("exec") && g.contains_key("ops"));
    if let Some(cycle) = find_cycle(&g) {
        panic!(
            "the top-level modules form a cycle: {}\nthe graph: {g:#?}",
            cycle.join(" → ")
        );
    }
}

#[test]
fn the_layers_keep_their_direction() {
    let g = graph();
    // What each layer must never use: the layers above it (docs/architecture.md).
    let forbidden: [(&str, &[&str]); 9] = [
        (
            "model",
            &[
                "policy", "client", "plan", "ops", "exec", "report", "op", "cli", "sched", "mcp",
                "store",
            ],
        ),
        (
            "policy",
            &[
                "client", "plan", "ops", "exec", "report", "op", "cli", "sched", "mcp", "store",
            ],
        ),
        (
            "client",
            &[
                "plan", "policy", "ops", "exec", "report", "exit", "cli", "mcp", "store",
            ],
        ),
        (
            "plan",
            &[
                "client", "ops", "exec", "report", "op", "cli", "sched", "mcp", "store",
            ],
        ),
        (
            "ops",
            &[
                "exec", "report", "op", "cli", "sched", "exit", "mcp", "store",
            ],
        ),
        (
            "report",
            &["exec", "ops", "op", "cli", "sched", "mcp", "store"],
        ),
        (
            "local",
            &[
                "client", "plan", "policy", "ops", "exec", "report", "cli", "mcp", "store",
            ],
        ),
        // An entry point like `op`: it may use every layer below, but not the command line, which
        // starts it.
        ("mcp", &["cli", "sched"]),
        // Shared state, used by the command line and the scheduler; it uses exec and report.
        ("store", &["cli", "sched", "mcp", "op", "ops"]),
    ];
    for (module, never) in forbidden {
        for n in never {
            assert!(
                !g[module].contains(*n),
                "`{module}` uses `{n}`, a layer above it: {:?}",
                g[module]
            );
        }
    }
}
