//! The step graph: cycles, levels, and drawings of the graph (Mermaid, Graphviz).
//!
//! Edges come from `needs` and from `${{ steps.X… }}` references (collected by [`super::needs`] and
//! [`super::names`]). Cycles are looked for between the steps as written (so a cycle is printed with
//! the ids the user wrote); levels and the order are computed between the copies of matrix steps
//! ([`super::matrix`]).

use std::fmt::Write as _;

use super::checked::CheckedPlan;

/// A cycle among nodes, when there is one: the nodes in the order they run (each waits for the one
/// before it), the first repeated at the end. `deps[i]` are the nodes `i` waits for.
pub fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let n = deps.len();
    let mut mark = vec![Mark::New; n];
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative depth-first search; `path` holds the open nodes.
        let mut path: Vec<usize> = vec![start];
        let mut next: Vec<usize> = vec![0];
        mark[start] = Mark::Open;
        while let Some(&node) = path.last() {
            let i = next.last().copied().unwrap_or(0);
            if let Some(&d) = deps[node].get(i) {
                if let Some(top) = next.last_mut() {
                    *top += 1;
                }
                match mark.get(d).copied() {
                    Some(Mark::New) => {
                        mark[d] = Mark::Open;
                        path.push(d);
                        next.push(0);
                    }
                    Some(Mark::Open) => {
                        // `path` from d to node, each waiting for the next: reverse it so that
                        // each runs before the next.
                        let from = path.iter().position(|&p| p == d).unwrap_or(0);
                        let mut cycle: Vec<usize> = path[from..].to_vec();
                        cycle.reverse();
                        // Start at the node written first, so the message reads in plan order.
                        if let Some(min) = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, n)| **n)
                            .map(|(k, _)| k)
                        {
                            cycle.rotate_left(min);
                        }
                        cycle.push(cycle[0]);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                mark[node] = Mark::Done;
                path.pop();
                next.pop();
            }
        }
    }
    None
}

/// The level of each node of an acyclic graph: 0 without dependencies, else one more than the
/// highest level among what it waits for.
pub fn levels(deps: &[Vec<usize>]) -> Vec<usize> {
    let n = deps.len();
    let mut level: Vec<Option<usize>> = vec![None; n];
    for start in 0..n {
        let mut stack = vec![start];
        while let Some(&node) = stack.last() {
            if level[node].is_some() {
                stack.pop();
                continue;
            }
            let pending: Vec<usize> = deps[node]
                .iter()
                .copied()
                .filter(|&d| d < n && level[d].is_none())
                .collect();
            if pending.is_empty() || stack.len() > n {
                let l = deps[node]
                    .iter()
                    .filter_map(|&d| level.get(d).copied().flatten())
                    .map(|l| l + 1)
                    .max()
                    .unwrap_or(0);
                level[node] = Some(l);
                stack.pop();
            } else {
                stack.extend(pending);
            }
        }
    }
    level.into_iter().map(|l| l.unwrap_or(0)).collect()
}

fn mermaid_label(s: &str) -> String {
    s.replace('"', "#quot;")
}

fn dot_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A step to draw: its id and kind, the ids it waits for, and a class to colour it by (a run's state
/// of it), if any.
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    /// The step's id (of a matrix copy, as run).
    pub id: &'a str,
    /// Its kind.
    pub kind: &'a str,
    /// The ids it waits for.
    pub needs: &'a [String],
    /// The class it is drawn in.
    pub class: Option<&'a str>,
}

/// How a class is drawn: its name, fill colour and text colour (`#rrggbb`).
pub type Style<'a> = (&'a str, &'a str, &'a str);

/// The nodes of a plan's (expanded) graph, without classes.
pub fn plan_nodes(plan: &CheckedPlan) -> Vec<Node<'_>> {
    plan.steps
        .iter()
        .map(|s| Node {
            id: &s.id,
            kind: s.kind.name(),
            needs: &s.needs,
            class: None,
        })
        .collect()
}

/// The plan's graph as a Mermaid flowchart: one node per (expanded) step labelled with its id and
/// kind, an arrow from each step to the steps that wait for it.
pub fn to_mermaid(plan: &CheckedPlan) -> String {
    let mut out = mermaid(&plan_nodes(plan), &[]);
    mermaid_groups(plan, &mut out);
    out
}

/// Adds the plan's groups of sub-plans to its Mermaid flowchart (made from [`plan_nodes`]), as
/// subgraphs.
pub fn mermaid_groups(plan: &CheckedPlan, out: &mut String) {
    for (k, (group, members)) in groups(plan).iter().enumerate() {
        let _ = writeln!(out, "    subgraph g{k}[\"{}\"]", mermaid_label(group));
        for i in members {
            let _ = writeln!(out, "        s{i}");
        }
        out.push_str("    end\n");
    }
}

/// The groups of sub-plans (`uses:`), each with the indexes of its steps in the plan, its `uses`
/// step (the group's end) last: drawn as Mermaid subgraphs and dot clusters.
fn groups(plan: &CheckedPlan) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, s) in plan.steps.iter().enumerate() {
        let group = match (&s.kind, &s.group) {
            (super::StepKind::Uses(_), Some(g)) => format!("{} ({})", s.id, g.file),
            _ => match super::uses::group_of(s) {
                Some(g) => {
                    let file = plan
                        .step(g)
                        .and_then(|u| u.group.as_ref())
                        .map(|u| u.file.as_str());
                    format!("{g} ({})", file.unwrap_or(""))
                }
                None => continue,
            },
        };
        match out.iter_mut().find(|(g, _)| *g == group) {
            Some((_, members)) => members.push(i),
            None => out.push((group, vec![i])),
        }
    }
    out
}

/// A graph as a Mermaid flowchart, its nodes coloured by the `styles` of their classes.
pub fn mermaid(nodes: &[Node<'_>], styles: &[Style<'_>]) -> String {
    let mut out = String::from("flowchart TD\n");
    let index: std::collections::HashMap<&str, usize> =
        nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
    for (i, s) in nodes.iter().enumerate() {
        let _ = writeln!(out, "    s{i}[\"{}<br/>{}\"]", mermaid_label(s.id), s.kind);
    }
    for (i, s) in nodes.iter().enumerate() {
        for n in s.needs {
            if let Some(j) = index.get(n.as_str()) {
                let _ = writeln!(out, "    s{j} --> s{i}");
            }
        }
    }
    for (class, fill, text) in styles {
        let members: Vec<String> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.class == Some(*class))
            .map(|(i, _)| format!("s{i}"))
            .collect();
        if members.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "    classDef {class} fill:{fill},color:{text},stroke:#57606a"
        );
        let _ = writeln!(out, "    class {} {class}", members.join(","));
    }
    out
}

/// The plan's graph in Graphviz dot.
pub fn to_dot(plan: &CheckedPlan) -> String {
    let mut out = dot(&plan.plan.name, &plan_nodes(plan), &[]);
    dot_groups(plan, &mut out);
    out
}

/// Adds the plan's groups of sub-plans to its dot graph (made from [`plan_nodes`]), as clusters.
pub fn dot_groups(plan: &CheckedPlan, out: &mut String) {
    let groups = groups(plan);
    if groups.is_empty() || !out.ends_with("}\n") {
        return;
    }
    out.truncate(out.len() - 2);
    for (k, (group, members)) in groups.iter().enumerate() {
        let _ = writeln!(
            out,
            "    subgraph cluster_{k} {{\n        label={};",
            dot_quote(group)
        );
        for &i in members {
            let _ = writeln!(out, "        {};", dot_quote(&plan.steps[i].id));
        }
        out.push_str("    }\n");
    }
    out.push_str("}\n");
}

/// A graph in Graphviz dot, its nodes filled by the `styles` of their classes.
pub fn dot(name: &str, nodes: &[Node<'_>], styles: &[Style<'_>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_quote(name));
    out.push_str("    rankdir=TB;\n    node [shape=box];\n");
    for s in nodes {
        let style = s
            .class
            .and_then(|c| styles.iter().find(|(name, ..)| *name == c))
            .map_or(String::new(), |(_, fill, text)| {
                format!(", style=filled, fillcolor=\"{fill}\", fontcolor=\"{text}\"")
            });
        let _ = writeln!(
            out,
            "    {} [label={}{style}];",
            dot_quote(s.id),
            dot_quote(&format!("{}\n{}", s.id, s.kind)).replace("\n", "\\n")
        );
    }
    for s in nodes {
        for n in s.needs {
            let _ = writeln!(out, "    {} -> {};", dot_quote(n), dot_quote(s.id));
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_found_in_run_order() {
        // 0 waits for 2, 1 waits for 0, 2 waits for 1: 0 → 1 → 2 → 0.
        let deps = vec![vec![2], vec![0], vec![1], vec![]];
        let c = find_cycle(&deps).unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(c.first(), c.last());
        for w in c.windows(2) {
            assert!(deps[w[1]].contains(&w[0]), "{c:?}");
        }
        assert_eq!(find_cycle(&[vec![], vec![0], vec![0, 1]]), None);
        assert_eq!(find_cycle(&[vec![0]]), Some(vec![0, 0]));
    }

    #[test]
    fn levels_follow_the_longest_path() {
        let deps = vec![vec![], vec![0], vec![0, 1], vec![]];
        assert_eq!(levels(&deps), vec![0, 1, 2, 0]);
    }
}
