//! Step selection: `--only ID…` keeps those steps and what they need, transitively; `--skip ID…`
//! drops those steps and what needs them, transitively (a step cannot run without the outputs and
//! the order of what it needs, as in GitHub Actions, where a job whose `needs` was skipped is
//! skipped). An id names a step as written (all its matrix copies) or one copy. The selection is
//! applied to a checked plan, so `plan`, `run` and `resume` see the same steps; the steps left out
//! are not in the run at all (nothing is submitted or paid for them).

use std::collections::{BTreeSet, HashMap};

use super::checked::CheckedPlan;
use super::codes::Code;
use super::diag::Diagnostic;

/// What `--only` and `--skip` ask for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// `--only`: these steps and what they need.
    pub only: Vec<String>,
    /// `--skip`: not these steps, nor what needs them.
    pub skip: Vec<String>,
}

impl Selection {
    /// Whether every step is selected.
    pub fn is_all(&self) -> bool {
        self.only.is_empty() && self.skip.is_empty()
    }
}

/// The steps left out, by (expanded) id, and why: `needed by none of --only`, `skipped`, or
/// `needs X, which is skipped`.
pub type LeftOut = Vec<(String, String)>;

/// Applies a selection to a checked plan: the steps not selected are removed (the others keep their
/// order and are levelled again). Unknown ids are errors with a "did you mean"; so is an `--only`
/// step that needs a skipped one.
pub fn apply(plan: &mut CheckedPlan, sel: &Selection) -> Result<LeftOut, Vec<Diagnostic>> {
    if sel.is_all() {
        return Ok(Vec::new());
    }
    let mut errors = Vec::new();
    let only = resolve(plan, "--only", &sel.only, &mut errors);
    let skip = resolve(plan, "--skip", &sel.skip, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let pos: HashMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let n = plan.steps.len();
    // Steps are in a topological order: what a step needs comes before it.
    let mut kept = vec![sel.only.is_empty(); n];
    if !sel.only.is_empty() {
        for &i in &only {
            kept[i] = true;
        }
        for i in (0..n).rev() {
            if kept[i] {
                for need in &plan.steps[i].needs {
                    if let Some(&j) = pos.get(need.as_str()) {
                        kept[j] = true;
                    }
                }
            }
        }
    }
    let mut why: Vec<Option<Why>> = (0..n)
        .map(|i| (!kept[i]).then_some(Why::NotNeeded))
        .collect();
    for &i in &skip {
        why[i] = Some(Why::Skipped);
    }
    for i in 0..n {
        if why[i].is_some() {
            continue;
        }
        let skipped_need = plan.steps[i].needs.iter().find(|need| {
            pos.get(need.as_str())
                .is_some_and(|&j| matches!(why[j], Some(Why::Skipped | Why::NeedsSkipped(_))))
        });
        if let Some(need) = skipped_need {
            why[i] = Some(Why::NeedsSkipped(need.clone()));
        }
    }
    for &i in &only {
        let because = match &why[i] {
            Some(Why::Skipped) => "--skip names it too".to_string(),
            Some(Why::NeedsSkipped(need)) => format!("it needs `{need}`, which --skip leaves out"),
            _ => continue,
        };
        errors.push(
            Diagnostic::new(format!(
                "`--only {}`: the step cannot run: {because}",
                plan.steps[i].id
            ))
            .code(Code::StepSelection)
            .help("drop it from --only, or drop what it needs from --skip"),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut left_out = Vec::new();
    let steps = std::mem::take(&mut plan.steps);
    for (s, w) in steps.into_iter().zip(why) {
        match w {
            Some(w) => left_out.push((s.id, w.to_string())),
            None => plan.steps.push(s),
        }
    }
    super::needs::order(&mut plan.steps);
    plan.step_index = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    Ok(left_out)
}

/// Why a step is left out.
enum Why {
    /// `--only` is given and no step of it needs this one.
    NotNeeded,
    /// `--skip` names it.
    Skipped,
    /// It needs a step that is skipped (the id).
    NeedsSkipped(String),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::NotNeeded => f.write_str("not needed by the steps of --only"),
            Why::Skipped => f.write_str("skipped (--skip)"),
            Why::NeedsSkipped(need) => write!(f, "needs `{need}`, which is skipped"),
        }
    }
}

/// The positions of the steps the ids name (a step as written names all its copies); an unknown
/// id is an error naming the flag, with a "did you mean".
fn resolve(
    plan: &CheckedPlan,
    flag: &str,
    ids: &[String],
    errors: &mut Vec<Diagnostic>,
) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for id in ids {
        let hits: Vec<usize> = plan
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.id == *id || s.base_id == *id)
            .map(|(i, _)| i)
            .collect();
        if hits.is_empty() {
            let names: BTreeSet<&str> = plan.steps.iter().map(|s| s.base_id.as_str()).collect();
            errors.push(
                Diagnostic::new(format!(
                    "`{flag} {}`: the plan has no step `{}`",
                    crate::text::shown(id),
                    crate::text::shown(id)
                ))
                .code(Code::StepSelection)
                .suggest(super::diag::suggest(id, names.iter().copied())),
            );
        }
        out.extend(hits);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::check::LoadOptions;
    use super::super::check::test_support::{FEEDBACK, load_text};
    use super::*;

    fn ids(only: &[&str], skip: &[&str]) -> Result<Vec<String>, Vec<String>> {
        let mut p = load_text(FEEDBACK, &[], &LoadOptions::default()).unwrap();
        let sel = Selection {
            only: only.iter().map(|s| s.to_string()).collect(),
            skip: skip.iter().map(|s| s.to_string()).collect(),
        };
        match apply(&mut p, &sel) {
            Ok(_) => {
                assert!(p.steps.iter().all(|s| p.step(&s.id).is_some()));
                Ok(p.steps.iter().map(|s| s.id.clone()).collect())
            }
            Err(ds) => Err(ds.iter().map(|d| d.message.clone()).collect()),
        }
    }

    #[test]
    fn only_keeps_what_the_steps_need_and_skip_what_needs_them() {
        assert_eq!(ids(&["done"], &[]).unwrap(), ["analyze", "done"]);
        // A matrix step as written selects all its copies; one copy selects itself.
        assert_eq!(
            ids(&["summarize[tone=casual]"], &[]).unwrap(),
            ["analyze", "done", "summarize[tone=casual]"]
        );
        assert_eq!(ids(&[], &["summarize"]).unwrap(), ["analyze", "done"]);
        assert_eq!(
            ids(&[], &["summarize[tone=formal]"]).unwrap(),
            ["analyze", "done", "summarize[tone=casual]"]
        );
        assert_eq!(ids(&[], &[]).unwrap().len(), 5);
    }

    #[test]
    fn unknown_ids_and_contradictions_are_errors() {
        assert_eq!(
            ids(&["dne"], &[]).unwrap_err(),
            ["`--only dne`: the plan has no step `dne`"]
        );
        assert_eq!(
            ids(&["report"], &["done"]).unwrap_err(),
            [
                "`--only report`: the step cannot run: it needs `summarize[tone=formal]`, which --skip leaves out"
            ]
        );
        assert_eq!(
            ids(&["done"], &["done"]).unwrap_err(),
            ["`--only done`: the step cannot run: --skip names it too"]
        );
    }
}
