//! Matrix expansion: a step with `matrix:` runs once per combination of its values, each copy with an
//! id like `summarize[tone=formal]`. This file holds the whole of that concept: the matrix values
//! (rendered at load, since they decide how many steps there are), their combinations, and how copies
//! meet — a step with the same matrix keys as a matrix step it reads pairs copy with copy, any other
//! step sees the list of all copies' outputs. Every planned step is a copy made here.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::{Map, Value};

use super::check::{BaseStep, Checker, ptr_seg};
use super::checked::{DEFAULT_TIMEOUT, PlannedStep, StepView};
use super::codes::Code;
use super::diag::Diagnostic;
use super::kinds::unreachable_kind;

/// A matrix that cannot be expanded: the key it is about and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MatrixError {
    /// `matrix: {}`.
    #[error("the matrix has no keys")]
    NoKeys,
    /// A key's value is not a list.
    #[error("matrix key `{0}` must be a list of values")]
    NotAList(String),
    /// A key's list is empty.
    #[error("matrix key `{0}` has an empty list: the step would never run")]
    Empty(String),
    /// A value is a list or a mapping.
    #[error(
        "matrix key `{key}` has a value that is not a string, number or boolean (item {index})"
    )]
    NotScalar {
        /// The key.
        key: String,
        /// The item's index in the list.
        index: usize,
    },
    /// The same value twice.
    #[error("matrix key `{key}` lists `{value}` twice")]
    Duplicate {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// More combinations than a matrix may make.
    #[error(
        "the matrix makes {} copies of the step; a matrix may make at most {max} (`limits.matrix_copies`)",
        copies_text(*.copies)
    )]
    TooManyCopies {
        /// How many it would make (saturated at `u64::MAX`).
        copies: u64,
        /// The limit in force.
        max: usize,
    },
}

/// A count of copies in words: the number, or "more than 18 quintillion".
fn copies_text(n: u64) -> String {
    if n == u64::MAX {
        "more than 18,446,744,073,709,551,615".to_string()
    } else {
        n.to_string()
    }
}

impl MatrixError {
    /// The matrix key the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            MatrixError::NoKeys | MatrixError::TooManyCopies { .. } => None,
            MatrixError::NotAList(k) | MatrixError::Empty(k) => Some(k),
            MatrixError::NotScalar { key, .. } | MatrixError::Duplicate { key, .. } => Some(key),
        }
    }
}

/// A matrix value as it appears in an id: strings bare, numbers and booleans as JSON.
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every combination of a matrix's values: the cartesian product, keys in the order written, the last
/// key varying fastest; at most `max` of them (counted before any is made).
pub fn expand_matrix(
    matrix: &Map<String, Value>,
    max: usize,
) -> Result<Vec<Map<String, Value>>, MatrixError> {
    if matrix.is_empty() {
        return Err(MatrixError::NoKeys);
    }
    let copies = matrix.values().fold(1u64, |n, v| {
        n.saturating_mul(v.as_array().map_or(1, |a| a.len().max(1)) as u64)
    });
    if copies > max as u64 {
        return Err(MatrixError::TooManyCopies { copies, max });
    }
    let mut combos: Vec<Map<String, Value>> = vec![Map::new()];
    for (key, values) in matrix {
        let list = values
            .as_array()
            .ok_or_else(|| MatrixError::NotAList(key.clone()))?;
        if list.is_empty() {
            return Err(MatrixError::Empty(key.clone()));
        }
        let mut seen = BTreeSet::new();
        for (index, v) in list.iter().enumerate() {
            if v.is_array() || v.is_object() || v.is_null() {
                return Err(MatrixError::NotScalar {
                    key: key.clone(),
                    index,
                });
            }
            if !seen.insert(scalar_text(v)) {
                return Err(MatrixError::Duplicate {
                    key: key.clone(),
                    value: scalar_text(v),
                });
            }
        }
        let mut next = Vec::with_capacity(combos.len() * list.len());
        for c in &combos {
            for v in list {
                let mut c = c.clone();
                c.insert(key.clone(), v.clone());
                next.push(c);
            }
        }
        combos = next;
    }
    Ok(combos)
}

/// The id of a matrix copy: `summarize[tone=formal]`, `x[a=1,b=2]`; the base id without a matrix.
pub fn copy_id(base: &str, combo: &Map<String, Value>) -> String {
    if combo.is_empty() {
        return base.to_string();
    }
    let parts: Vec<String> = combo
        .iter()
        .map(|(k, v)| format!("{k}={}", scalar_text(v)))
        .collect();
    format!("{base}[{}]", parts.join(","))
}

impl Checker<'_> {
    /// The combinations of step `i`'s matrix (one empty map without a matrix), its values rendered
    /// first; `None` when the matrix cannot be expanded (the error is recorded).
    pub(super) fn matrix_combos(&mut self, i: usize) -> Option<Vec<Map<String, Value>>> {
        let step = &self.plan.steps[i];
        let Some(m) = &step.matrix else {
            return Some(vec![Map::new()]);
        };
        let mut rendered = Map::new();
        let mut ok = true;
        for (k, v) in m {
            let pointer = format!("/steps/{i}/matrix/{}", ptr_seg(k));
            let v = match v {
                Value::String(s) if self.reads_secret(s) => {
                    // A matrix value names the copies (`ask[key=…]`): in every id, every line.
                    self.err(
                        &pointer,
                        Diagnostic::new(format!(
                            "step `{}`: a matrix value cannot be computed from a secret: it \
                             becomes part of the copies' ids",
                            step.id
                        ))
                        .code(Code::SecretOutOfPlace),
                    );
                    ok = false;
                    continue;
                }
                Value::String(s) if super::template::has_template(s) => {
                    match self.static_render_checked(s, &pointer, i, None) {
                        Some(v) => v,
                        None => {
                            ok = false;
                            continue;
                        }
                    }
                }
                other => other.clone(),
            };
            rendered.insert(k.clone(), v);
        }
        if !ok {
            return None;
        }
        match expand_matrix(&rendered, self.limits.matrix_copies) {
            Ok(c) => Some(c),
            Err(e) => {
                let pointer = match e.key() {
                    Some(k) => format!("/steps/{i}/matrix/{}", ptr_seg(k)),
                    None => format!("/steps/{i}/matrix"),
                };
                let mut d = Diagnostic::new(format!("step `{}`: {e}", step.id)).code(Code::Matrix);
                if let MatrixError::TooManyCopies { .. } = e {
                    d = d.help(format!(
                        "use fewer keys or values, split the step, or raise `limits.matrix_copies` \
                         (at most {})",
                        super::limits::MATRIX_COPIES_CEILING
                    ));
                }
                self.err(&pointer, d);
                None
            }
        }
    }

    /// Whether copies of step `i` pair with copies of matrix step `j` (both have a matrix with the
    /// same keys).
    pub(super) fn paired(&self, i: usize, j: usize) -> bool {
        match (&self.plan.steps[i].matrix, &self.plan.steps[j].matrix) {
            (Some(a), Some(b)) if i != j => {
                let ka: BTreeSet<&String> = a.keys().collect();
                let kb: BTreeSet<&String> = b.keys().collect();
                ka == kb
            }
            _ => false,
        }
    }

    /// The copies of each step, in plan order, each with what it waits for, what `steps.X` means to
    /// it, and its spec rendered as far as it can be at load.
    pub(super) fn expand(&mut self, bases: &[BaseStep]) -> Vec<PlannedStep> {
        let plan = self.plan;
        let copies: Vec<Vec<String>> = bases
            .iter()
            .enumerate()
            .map(|(i, b)| {
                b.combos
                    .iter()
                    .map(|c| copy_id(&plan.steps[i].id, c))
                    .collect()
            })
            .collect();
        let mut planned: Vec<PlannedStep> =
            Vec::with_capacity(bases.iter().map(|b| b.combos.len()).sum());
        for (i, b) in bases.iter().enumerate() {
            let step = &plan.steps[i];
            for (ci, combo) in b.combos.iter().enumerate() {
                let (needs, views) = self.copy_needs(bases, &copies, i, ci);
                let last = ci + 1 == b.combos.len();
                let spec = self.render_static(i, b, combo, last);
                planned.push(PlannedStep {
                    id: copies[i][ci].clone(),
                    base_id: step.id.clone(),
                    index: i,
                    kind: if last {
                        b.kind.borrow_mut().take()
                    } else {
                        b.kind.borrow().clone()
                    }
                    .unwrap_or_else(|| unreachable_kind(b.kname)),
                    matrix: combo.clone(),
                    needs,
                    level: 0,
                    timeout: step
                        .timeout
                        .or(plan.defaults.timeout)
                        .map_or(DEFAULT_TIMEOUT, |d| d.get()),
                    retry: step
                        .retry
                        .clone()
                        .or_else(|| plan.defaults.retry.clone())
                        .unwrap_or_default(),
                    // A notify leaves the run alone unless it says `fail_run`.
                    continue_on_error: step.continue_on_error
                        || step.notify.as_ref().is_some_and(|n| !n.fail_run),
                    when: step.when.clone(),
                    outputs: step.outputs.clone(),
                    cache: step.cache,
                    location: self.source.locate(&format!("/steps/{i}")),
                    pointer: format!("/steps/{i}"),
                    spec,
                    spec_text: None,
                    prompt_file: b.prompt_file.clone(),
                    views,
                    group: None,
                });
            }
        }
        planned
    }

    /// What copy `ci` of step `i` waits for (expanded ids, each once) and what each `steps.X` it
    /// reads is to it: the paired copy, the only copy, or the list of all copies.
    fn copy_needs(
        &mut self,
        bases: &[BaseStep],
        copies: &[Vec<String>],
        i: usize,
        ci: usize,
    ) -> (Vec<String>, BTreeMap<String, StepView>) {
        let b = &bases[i];
        let combo = &b.combos[ci];
        let mut needs: Vec<String> = Vec::new();
        let mut views = BTreeMap::new();
        for d in &b.deps {
            let Some(j) = self.first_index(d) else {
                continue;
            };
            let view = if self.paired(i, j) {
                let partner = bases[j].combos.iter().position(|c| c == combo);
                match partner {
                    Some(p) => StepView::One(copies[j][p].clone()),
                    None => {
                        self.err(
                            &format!("/steps/{i}/matrix"),
                            Diagnostic::new(format!(
                                "`{}` pairs with the matrix step `{d}` (same keys), but `{d}` has no copy for {}",
                                copies[i][ci],
                                copy_id("", combo).trim_start_matches('[').trim_end_matches(']')
                            ))
                            .code(Code::Matrix),
                        );
                        continue;
                    }
                }
            } else if self.plan.steps[j].matrix.is_some() {
                StepView::List(copies[j].clone())
            } else {
                StepView::One(copies[j][0].clone())
            };
            match &view {
                StepView::One(id) => needs.push(id.clone()),
                StepView::List(ids) => needs.extend(ids.iter().cloned()),
            }
            if b.refs.contains(d) {
                views.insert(d.clone(), view);
            }
        }
        let mut seen = HashSet::new();
        needs.retain(|n| seen.insert(n.clone()));
        (needs, views)
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::LoadOptions;
    use super::super::check::test_support::load_text;
    use super::super::checked::{RenderedStep, RunInfo, StepOutputs};
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn expands_in_key_order() {
        let m = map(json!({"a": [1, 2], "b": ["x", "y"]}));
        let ids: Vec<String> = expand_matrix(&m, 1000)
            .unwrap()
            .iter()
            .map(|c| copy_id("s", c))
            .collect();
        assert_eq!(
            ids,
            vec!["s[a=1,b=x]", "s[a=1,b=y]", "s[a=2,b=x]", "s[a=2,b=y]"]
        );
    }

    #[test]
    fn matrix_errors() {
        assert_eq!(expand_matrix(&map(json!({})), 10), Err(MatrixError::NoKeys));
        assert_eq!(
            expand_matrix(&map(json!({"a": []})), 10),
            Err(MatrixError::Empty("a".into()))
        );
        assert_eq!(
            expand_matrix(&map(json!({"a": "x"})), 10),
            Err(MatrixError::NotAList("a".into()))
        );
        assert!(matches!(
            expand_matrix(&map(json!({"a": [1, [2]]})), 10),
            Err(MatrixError::NotScalar { index: 1, .. })
        ));
        // Counted before anything is made: 2^64 copies fail at once.
        let wide: Map<String, Value> = (0..64).map(|i| (format!("k{i}"), json!([1, 2]))).collect();
        assert_eq!(
            expand_matrix(&wide, 1000),
            Err(MatrixError::TooManyCopies {
                copies: u64::MAX,
                max: 1000
            })
        );
        assert_eq!(
            expand_matrix(&map(json!({"a": [1, 2], "b": [1, 2]})), 4)
                .unwrap()
                .len(),
            4
        );
        assert!(expand_matrix(&map(json!({"a": [1, 2], "b": [1, 2, 3]})), 5).is_err());
    }

    #[test]
    fn matrix_pairing_and_outputs() {
        let yaml = r#"
version: 1
name: t
steps:
  - id: ask
    job: {job_type: ollama, wallet: w, payment: 1, model: "${{ matrix.model }}", prompt: hi}
    matrix: {model: [llama2, mistral]}
    outputs:
      words: "${{ output | wordcount }}"
  - id: judge
    job: {job_type: inference, wallet: w, payment: 1, prompt: "${{ steps.ask.words }}"}
    matrix: {model: [llama2, mistral]}
  - id: all
    job: {job_type: inference, wallet: w, payment: 1, prompt: "${{ steps.ask | map(attribute='words') | join(',') }}"}
"#;
        let p = load_text(yaml, &[], &LoadOptions::default()).unwrap();
        let judge = p.step("judge[model=mistral]").unwrap();
        assert_eq!(judge.needs, vec!["ask[model=mistral]"]);
        assert_eq!(p.step("all").unwrap().needs.len(), 2);
        let run = RunInfo::default();
        let own: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"output": "a b c"})).unwrap();
        let outs = p
            .render_outputs(
                p.step("ask[model=llama2]").unwrap(),
                &own,
                &StepOutputs::new(),
                &run,
            )
            .unwrap();
        assert_eq!(outs["words"], serde_json::json!(3));
        let mut so = StepOutputs::new();
        so.insert("ask[model=llama2]".into(), serde_json::json!({"words": 3}));
        so.insert("ask[model=mistral]".into(), serde_json::json!({"words": 5}));
        match p.render(judge, &so, &run).unwrap() {
            RenderedStep::Job { request, .. } => assert_eq!(request.prompt, "5"),
            o => panic!("{o:?}"),
        }
        match p.render(p.step("all").unwrap(), &so, &run).unwrap() {
            RenderedStep::Job { request, .. } => assert_eq!(request.prompt, "3,5"),
            o => panic!("{o:?}"),
        }
    }
}
