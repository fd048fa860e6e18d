//! Per-kind checks: a step has exactly one operation (`submit`, `wait`, `job`, …), its spec is taken
//! as written in the file, and a `submit` or `job` step has a prompt, inline or from a file, never
//! both. These are the checks that depend on what kind of step it is rather than on its templates,
//! matrix or needs, and they come first: every later check reads the kind's spec that is settled
//! here (with a prompt file already read into `prompt`).

use serde_json::{Map, Value};

use super::check::Checker;
use super::checked::StepKind;
use super::codes::Code;
use super::diag::Diagnostic;

impl Checker<'_> {
    /// The step's operation: exactly one of the kinds, else an error at the step.
    pub(super) fn step_kind(&mut self, i: usize) -> Option<StepKind> {
        let step = &self.plan.steps[i];
        let mut set: Vec<StepKind> = Vec::with_capacity(1);
        let mut add = |k: Option<StepKind>| set.extend(k);
        add(step.submit.clone().map(StepKind::Submit));
        add(step.wait.clone().map(StepKind::Wait));
        add(step.fetch.clone().map(StepKind::Fetch));
        add(step.job.clone().map(StepKind::Job));
        add(step.optimize.clone().map(StepKind::Optimize));
        add(step.status.clone().map(StepKind::Status));
        add(step.list.clone().map(StepKind::List));
        add(step.cancel.clone().map(StepKind::Cancel));
        add(step.balance.clone().map(StepKind::Balance));
        add(step.notify.clone().map(StepKind::Notify));
        add(step.uses.clone().map(StepKind::Uses));
        let kind = match set.len() {
            1 => set.remove(0),
            _ => {
                self.err(
                    &format!("/steps/{i}"),
                    Diagnostic::new(format!(
                        "step `{}` must have exactly one operation ({})",
                        step.id,
                        super::types::STEP_KINDS.join(", ")
                    ))
                    .code(Code::StepShape),
                );
                return None;
            }
        };
        Some(kind)
    }

    /// The kind's spec as written in the file (templates as the user wrote them); an empty mapping
    /// for a kind written with nothing under it.
    pub(super) fn spec_as_written(&self, i: usize, kind: &StepKind) -> Value {
        let kname = kind.name();
        let mut spec = self
            .written
            .get("steps")
            .and_then(|s| s.get(i))
            .and_then(|s| s.get(kname))
            .cloned()
            .unwrap_or_else(|| kind_spec(kind));
        if spec.is_null() {
            spec = Value::Object(Map::new());
        }
        spec
    }

    /// The prompt of a `submit` or `job` step: inline or from a file, not both, not neither. A
    /// prompt file is read into `prompt`; returns its name as written.
    pub(super) fn read_prompt(
        &mut self,
        i: usize,
        kind: &StepKind,
        spec: &mut Value,
    ) -> Option<String> {
        let step = &self.plan.steps[i];
        let kname = kind.name();
        let mut prompt_file = None;
        if matches!(kind, StepKind::Submit(_) | StepKind::Job(_)) {
            let has_prompt = spec.get("prompt").is_some();
            let pf = spec.get("prompt_file").cloned();
            match (has_prompt, pf) {
                (true, Some(_)) => self.err(
                    &format!("/steps/{i}/{kname}/prompt_file"),
                    Diagnostic::new("give either `prompt` or `prompt_file`, not both")
                        .code(Code::StepShape),
                ),
                (false, None) => self.err(
                    &format!("/steps/{i}/{kname}"),
                    Diagnostic::new(format!("step `{}` has no prompt", step.id))
                        .code(Code::StepShape)
                        .help(
                        "add `prompt: …` or `prompt_file: path` (relative to the plan's folder)",
                    ),
                ),
                (false, Some(Value::String(pf))) => {
                    let pointer = format!("/steps/{i}/{kname}/prompt_file");
                    if super::template::has_template(&pf) {
                        self.err(
                            &pointer,
                            Diagnostic::new("`prompt_file` cannot be a template")
                                .code(Code::FileInput)
                                .help("the file's content is templated; its name is not"),
                        );
                    } else {
                        let path = self.dir.join(&pf);
                        let root = self
                            .input_root
                            .get_or_init(|| super::inputs::repository_root(self.dir));
                        match super::inputs::read_confined(root, self.dir, &pf) {
                            Ok(text) => {
                                let file = super::files_read::FileRead::new(
                                    super::files_read::FileRole::Prompt,
                                    root,
                                    &path,
                                    false,
                                    text.as_bytes(),
                                );
                                super::files_read::add(&mut self.files_read, file);
                                if let Some(m) = spec.as_object_mut() {
                                    m.remove("prompt_file");
                                    m.insert("prompt".into(), Value::String(text));
                                }
                                prompt_file = Some(pf);
                            }
                            Err(e) => {
                                use super::inputs::InputError as E;
                                let shown = crate::text::shown(&pf);
                                let (message, help) = match e {
                                    E::NotFound | E::PermissionDenied | E::Io(_) => (
                                        format!(
                                            "cannot read the prompt file `{shown}` ({}): {e}",
                                            crate::text::shown(&path.display().to_string())
                                        ),
                                        "`prompt_file` is relative to the plan's folder".to_string(),
                                    ),
                                    E::Outside => (
                                        format!("the prompt file `{shown}` is refused: {e}"),
                                        "a plan reads files from its own repository only; move the \
                                         file there"
                                            .to_string(),
                                    ),
                                    E::TooLong => (
                                        format!("the prompt file `{shown}` is refused: {e}"),
                                        format!(
                                            "a prompt holds at most {} characters; only that \
                                             much of a prompt file is read",
                                            super::inputs::MAX_INPUT_CHARS
                                        ),
                                    ),
                                    E::NotAFile | E::NotUtf8 => (
                                        format!("the prompt file `{shown}` is refused: {e}"),
                                        "a prompt file is a UTF-8 text file in the plan's \
                                         repository"
                                            .to_string(),
                                    ),
                                };
                                self.err(
                                    &pointer,
                                    Diagnostic::new(message).code(Code::FileInput).help(help),
                                );
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        prompt_file
    }

    /// A `notify` step's message: `text` or `body`, not both, not neither; a URL written without
    /// templates is `http` or `https`.
    pub(super) fn notify_message(&mut self, i: usize, kind: &StepKind) {
        let StepKind::Notify(n) = kind else {
            return;
        };
        let id = &self.plan.steps[i].id;
        match (&n.text, &n.body) {
            (Some(_), Some(_)) => self.err(
                &format!("/steps/{i}/notify/body"),
                Diagnostic::new("give either `text` or `body`, not both").code(Code::StepShape),
            ),
            (None, None) => {
                let d = Diagnostic::new(format!("step `{id}` has no message"))
                    .help("add `text: …` (sent as {\"text\": …}) or `body: {…}` (sent as it is)")
                    .code(Code::StepShape);
                self.err(&format!("/steps/{i}/notify"), d)
            }
            _ => {}
        }
        if !super::template::has_template(&n.url)
            && let Err(e) = notify_url(&n.url)
        {
            self.err(
                &format!("/steps/{i}/notify/url"),
                Diagnostic::new(e).code(Code::InvalidValue),
            );
        }
    }

    /// The pointer in the file of a spec value (`rel` inside the kind's spec).
    pub(super) fn spec_pointer(&self, i: usize, kind: &str, rel: &str, from_file: bool) -> String {
        if from_file && rel == "/prompt" {
            format!("/steps/{i}/{kind}/prompt_file")
        } else {
            format!("/steps/{i}/{kind}{rel}")
        }
    }
}

/// A webhook URL: absolute, `http` or `https` (the error says why not, without the URL, which may
/// hold a secret).
pub(super) fn notify_url(url: &str) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("`url` is not a URL ({e})"))?;
    match u.scheme() {
        "http" | "https" => Ok(u),
        s => Err(format!("`url` must be http or https, not `{s}`")),
    }
}

/// The spec of a step kind, for serialization.
fn kind_spec(kind: &StepKind) -> Value {
    let v = match kind {
        StepKind::Submit(s) => serde_json::to_value(s),
        StepKind::Wait(s) => serde_json::to_value(s),
        StepKind::Fetch(s) => serde_json::to_value(s),
        StepKind::Job(s) => serde_json::to_value(s),
        StepKind::Optimize(s) => serde_json::to_value(s),
        StepKind::Status(s) | StepKind::Cancel(s) => serde_json::to_value(s),
        StepKind::List(s) => serde_json::to_value(s),
        StepKind::Balance(s) => serde_json::to_value(s),
        StepKind::Notify(s) => serde_json::to_value(s),
        StepKind::Uses(s) => serde_json::to_value(s),
    };
    v.unwrap_or(Value::Null)
}

/// Never used: each copy but the last clones the kind, and only the last takes it. Kept total so
/// that a mistake here shows as a plain empty `list` step rather than a panic.
pub(super) fn unreachable_kind(_kname: &str) -> StepKind {
    StepKind::List(super::types::ListSpec::default())
}

/// The name of a step's kind as written (the first one set; "" for none).
pub(super) fn written_kind(step: &super::types::Step) -> &'static str {
    let set = [
        step.submit.is_some(),
        step.wait.is_some(),
        step.fetch.is_some(),
        step.job.is_some(),
        step.optimize.is_some(),
        step.status.is_some(),
        step.list.is_some(),
        step.cancel.is_some(),
        step.balance.is_some(),
        step.notify.is_some(),
        step.uses.is_some(),
    ];
    set.iter()
        .position(|x| *x)
        .map_or("", |i| super::types::STEP_KINDS[i])
}

#[cfg(test)]
mod tests {
    use super::super::check::LoadOptions;
    use super::super::check::test_support::{load_text, messages};

    #[test]
    fn prompt_files_secrets_and_warnings() {
        let yaml = r#"
version: 1
name: t
secrets:
  KEY: {env: T_KEY}
vars: {topic: fish}
steps:
  - id: a
    submit:
      job_type: inference
      wallet: w
      payment: 1
      prompt_file: p.md
      endpoint: "http://x/?k=${{ secrets.KEY }}"
      model: "{{ vars.topic }}"
"#;
        let opts = LoadOptions {
            environment: Some([("T_KEY".to_string(), "s3cr3t".to_string())].into()),
            ..Default::default()
        };
        let p = load_text(yaml, &[("p.md", "About ${{ vars.topic }}.\n")], &opts).unwrap();
        assert_eq!(p.steps[0].spec["prompt"], "About fish.\n");
        assert_eq!(
            p.redact(p.steps[0].spec["endpoint"].as_str().unwrap()),
            "http://x/?k=***"
        );
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].location.as_ref().unwrap().line, 15);
        let m = messages(load_text(yaml, &[], &opts));
        assert!(
            m[0].starts_with("13: cannot read the prompt file `p.md`"),
            "{m:?}"
        );
        let m = messages(load_text(
            yaml,
            &[("p.md", "x")],
            &LoadOptions {
                environment: Some(Default::default()),
                ..Default::default()
            },
        ));
        assert_eq!(
            m,
            vec!["5: secret `KEY`: the environment variable `T_KEY` is not set []"]
        );
    }
}
