//! What each step waits for: step ids are unique (so that `needs` and `steps.X` name one step), every
//! `needs` names a known step other than itself, the steps as written form no cycle, and the expanded
//! copies are ordered by level. This is the step graph as the checker sees it, kept in one place so
//! that the rules about dependencies — including how a cycle is reported, with the ids the user
//! wrote — are read together; the graph algorithms themselves are in [`super::graph`].

use std::collections::HashMap;

use super::check::{BaseStep, Checker};
use super::checked::PlannedStep;
use super::codes::Code;
use super::diag::Diagnostic;

impl Checker<'_> {
    /// Indexes the step ids as written, reporting a repeated id at its second use.
    pub(super) fn index_ids(&mut self) {
        let plan = self.plan;
        let mut ids: HashMap<String, usize> = HashMap::with_capacity(plan.steps.len());
        for (i, step) in plan.steps.iter().enumerate() {
            if let Some(&first) = ids.get(&step.id) {
                let line = self.source.locate(&format!("/steps/{first}/id")).line;
                self.err(
                    &format!("/steps/{i}/id"),
                    Diagnostic::new(format!(
                        "duplicate step id `{}` (first used on line {line})",
                        step.id
                    ))
                    .code(Code::DuplicateStep)
                    .help("step ids must be unique; rename one of them"),
                );
            } else {
                ids.insert(step.id.clone(), i);
            }
        }
        self.ids = ids;
    }

    /// The index of the step with this id as written (the first, when an id is repeated).
    pub(super) fn first_index(&self, id: &str) -> Option<usize> {
        self.ids.get(id).copied()
    }

    /// Step `i`'s `needs` that name a known step; the others are reported.
    pub(super) fn needs(&mut self, i: usize) -> Vec<String> {
        let step = &self.plan.steps[i];
        let mut deps: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (j, need) in step.needs.iter().enumerate() {
            // Each unknown id costs a "did you mean" over every step: stop when enough are reported.
            if self.full() {
                break;
            }
            if !seen.insert(need.as_str()) {
                continue;
            }
            let pointer = format!("/steps/{i}/needs/{j}");
            if need == &step.id {
                self.err(
                    &pointer,
                    Diagnostic::new(format!("step `{need}` needs itself")).code(Code::UnknownNeed),
                );
            } else if !self.ids.contains_key(need) {
                let base = need.split('[').next().unwrap_or(need);
                let mut d = Diagnostic::new(format!(
                    "`needs` names an unknown step `{}`",
                    crate::text::shown(need)
                ))
                .code(Code::UnknownNeed)
                .suggest(super::diag::suggest(
                    need,
                    self.plan.steps.iter().map(|s| s.id.as_str()),
                ));
                if base != need && self.ids.contains_key(base) {
                    d = d.help(format!(
                        "name the matrix step as written, `{base}`: a step that needs it waits for all its copies"
                    ));
                }
                self.err(&pointer, d);
            } else {
                deps.push(need.clone());
            }
        }
        deps
    }

    /// Reports a cycle between the steps as written, if there is one; whether there was.
    pub(super) fn report_cycle(&mut self, bases: &[BaseStep]) -> bool {
        let plan = self.plan;
        let deps: Vec<Vec<usize>> = bases
            .iter()
            .map(|b| b.deps.iter().filter_map(|d| self.first_index(d)).collect())
            .collect();
        let Some(cycle) = super::graph::find_cycle(&deps) else {
            return false;
        };
        let names: Vec<&str> = cycle.iter().map(|&i| plan.steps[i].id.as_str()).collect();
        let at = cycle[0];
        self.err(
            &format!("/steps/{at}/id"),
            Diagnostic::new(format!("the steps form a cycle: {}", names.join(" → ")))
                .code(Code::Cycle)
                .help("each step in the cycle waits for the one before it; remove one of the `needs` or references"),
        );
        true
    }
}

/// Sets each copy's level and orders the copies by level, then plan order (copies in expansion
/// order). A status step without `needs` is levelled after the plain steps it waits for
/// ([`super::status::implicit_waits`]).
pub(super) fn order(planned: &mut [PlannedStep]) {
    let pos: HashMap<&str, usize> = planned
        .iter()
        .enumerate()
        .map(|(k, s)| (s.id.as_str(), k))
        .collect();
    let mut deps: Vec<Vec<usize>> = planned
        .iter()
        .map(|s| {
            s.needs
                .iter()
                .filter_map(|n| pos.get(n.as_str()).copied())
                .collect()
        })
        .collect();
    // A status step that needs nothing runs after the plain steps (as the run does it).
    let gates: Vec<_> = planned
        .iter()
        .map(|s| super::status::gate_of(s.when.as_ref()))
        .collect();
    for (p, g) in super::status::implicit_waits(&gates, &deps) {
        deps[g].push(p);
    }
    let levels = super::graph::levels(&deps);
    for (s, l) in planned.iter_mut().zip(levels) {
        s.level = l;
    }
    planned.sort_by_key(|s| s.level); // stable: plan order within a level
}

#[cfg(test)]
mod tests {
    use super::super::check::LoadOptions;
    use super::super::check::test_support::{load_text, messages};

    #[test]
    fn cycles_and_duplicates() {
        let yaml = r#"
version: 1
name: t
steps:
  - id: a
    needs: [c]
    list: {}
  - id: b
    status: {job: "${{ steps.a.jobs }}"}
  - id: c
    needs: [b]
    list: {}
"#;
        let m = messages(load_text(yaml, &[], &LoadOptions::default()));
        assert_eq!(m, vec!["5: the steps form a cycle: a → b → c → a []"]);
        let yaml =
            "version: 1\nname: t\nsteps:\n  - id: a\n    list: {}\n  - id: a\n    list: {}\n";
        let m = messages(load_text(yaml, &[], &LoadOptions::default()));
        assert_eq!(
            m,
            vec!["6: duplicate step id `a` (first used on line 4) []"]
        );
    }
}
