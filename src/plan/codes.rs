//! The stable codes of plan diagnostics (`AF0003`, like rustc's `E0308`): one per kind of problem,
//! shown in `error[AF0003]: …`, in `validate --output json` and in GitHub annotations
//! (`validate --format github`). This table is the only place a code is written; docs/diagnostics.md
//! lists it for users (a test keeps the two the same). A code, once given, keeps its meaning: a new
//! kind of problem gets a new number, and a retired one is not reused.

use std::fmt;

/// The kind of a diagnostic. See [`TABLE`] for each code and its meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    /// A problem no other code names.
    Other,
    /// The plan file cannot be read (missing, a directory, too large, binary, not UTF-8).
    Unreadable,
    /// The YAML is not well formed (syntax, duplicate keys, not a mapping at the top).
    Syntax,
    /// A key the plan format does not have.
    UnknownKey,
    /// A required key is missing.
    MissingKey,
    /// A value that must be one of a fixed set (an enum) is not one of them.
    InvalidEnum,
    /// A value of the wrong type.
    TypeMismatch,
    /// A value of the right type but the wrong form or range (duration, amount, id, bounds).
    InvalidValue,
    /// A step with no operation, or with more than one, or an operation missing its prompt.
    StepShape,
    /// Two steps with the same id.
    DuplicateStep,
    /// A template that does not parse or cannot be rendered.
    Template,
    /// A template reads a name that does not exist (variable, secret, step, matrix key, field).
    UnknownName,
    /// `needs` names a step that does not exist, or the step itself.
    UnknownNeed,
    /// The steps form a cycle.
    Cycle,
    /// The plan breaks its policy (payment bounds, allowed job types, models, wallets).
    Policy,
    /// A file input (`prompt_file`) is refused or cannot be read.
    FileInput,
    /// A secret flows where it could leak (a job's payload, an output, a matrix value).
    SecretOutOfPlace,
    /// A secret cannot be read (its variable unset, its file unreadable) or is malformed.
    SecretSource,
    /// A `--set` or `--vars` override does not fit the plan.
    Override,
    /// A matrix that cannot be expanded (too many copies, a missing pairing).
    Matrix,
    /// The `schedule` (cron expression or time zone) is invalid.
    Schedule,
    /// The plan is too big (steps, values) for its limits.
    Limit,
    /// More errors than are shown.
    TooManyErrors,
    /// A value written `{{ … }}` without a `$` (a warning: sent as written).
    BareBraces,
    /// An `inputs:` declaration that does not hold together (a name, its enum, a var of the same name).
    InputDeclaration,
    /// An input's value does not fit its type or its `enum`.
    InputValue,
    /// A required input was not given.
    InputRequired,
    /// `--only`/`--skip`/`--from-run` cannot select the steps asked for.
    StepSelection,
    /// A sub-plan (`uses:`) is refused (outside the repository, a template) or cannot be read.
    SubPlan,
    /// Sub-plans include each other in a cycle.
    IncludeCycle,
    /// A `with:` entry names no input of the sub-plan, or `with:` is on a step without `uses:`.
    WithInput,
    /// A sub-plan's own `policy:`, `defaults:`, `limits:` or `schedule:`, not applied when it is
    /// included (a warning).
    SubPlanBlock,
}

/// Every code: the enum value, its stable id, and what it means in words.
pub const TABLE: &[(Code, &str, &str)] = &[
    (Code::Other, "AF0000", "a problem no other code names"),
    (Code::Unreadable, "AF0001", "the plan file cannot be read"),
    (Code::Syntax, "AF0002", "the YAML is not well formed"),
    (Code::UnknownKey, "AF0003", "unknown key"),
    (Code::MissingKey, "AF0004", "missing required key"),
    (Code::InvalidEnum, "AF0005", "not one of the allowed values"),
    (Code::TypeMismatch, "AF0006", "value of the wrong type"),
    (
        Code::InvalidValue,
        "AF0007",
        "value of the wrong form or out of range",
    ),
    (
        Code::StepShape,
        "AF0008",
        "a step's operation is missing, doubled or incomplete",
    ),
    (Code::DuplicateStep, "AF0009", "duplicate step id"),
    (Code::Template, "AF0010", "template error"),
    (Code::UnknownName, "AF0011", "unknown name in a template"),
    (Code::UnknownNeed, "AF0012", "unknown step in `needs`"),
    (Code::Cycle, "AF0013", "the steps form a cycle"),
    (
        Code::Policy,
        "AF0014",
        "policy violation (payment bounds, job type, caps)",
    ),
    (
        Code::FileInput,
        "AF0015",
        "file input refused or unreadable",
    ),
    (
        Code::SecretOutOfPlace,
        "AF0016",
        "secret where it could leak",
    ),
    (
        Code::SecretSource,
        "AF0017",
        "secret cannot be read or is malformed",
    ),
    (
        Code::Override,
        "AF0018",
        "`--set`/`--vars` override does not fit the plan",
    ),
    (Code::Matrix, "AF0019", "matrix cannot be expanded"),
    (Code::Schedule, "AF0020", "invalid schedule"),
    (Code::Limit, "AF0021", "the plan exceeds its limits"),
    (Code::TooManyErrors, "AF0022", "more errors than are shown"),
    (
        Code::BareBraces,
        "AF0023",
        "`{{ … }}` without `$` is sent as written",
    ),
    (
        Code::InputDeclaration,
        "AF0024",
        "invalid `inputs:` declaration",
    ),
    (
        Code::InputValue,
        "AF0025",
        "input value does not fit its type or enum",
    ),
    (Code::InputRequired, "AF0026", "required input not given"),
    (
        Code::StepSelection,
        "AF0027",
        "`--only`/`--skip`/`--from-run` cannot select the steps",
    ),
    (
        Code::SubPlan,
        "AF0028",
        "sub-plan (`uses:`) refused or unreadable",
    ),
    (
        Code::IncludeCycle,
        "AF0029",
        "sub-plans include each other in a cycle",
    ),
    (
        Code::WithInput,
        "AF0030",
        "`with:` names no input of the sub-plan, or gives one it cannot take",
    ),
    (
        Code::SubPlanBlock,
        "AF0031",
        "a sub-plan's own block is not applied when it is included",
    ),
];

impl Code {
    /// Its row of [`TABLE`]: the id and the meaning.
    fn row(self) -> (&'static str, &'static str) {
        TABLE
            .iter()
            .find(|(c, _, _)| *c == self)
            .map_or(("AF0000", ""), |(_, id, m)| (id, m))
    }

    /// The stable id, `AF0003`.
    pub fn id(self) -> &'static str {
        self.row().0
    }

    /// What the code means, in words.
    pub fn meaning(self) -> &'static str {
        self.row().1
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let mut ids: Vec<&str> = TABLE.iter().map(|(_, id, _)| *id).collect();
        assert!(ids.iter().all(|id| id.len() == 6
            && id.starts_with("AF")
            && id[2..].bytes().all(|b| b.is_ascii_digit())));
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "a code is given twice");
        let mut codes: Vec<Code> = TABLE.iter().map(|(c, _, _)| *c).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), n, "a kind has two codes");
    }

    #[test]
    fn the_docs_list_every_code() {
        let doc = include_str!("../../docs/diagnostics.md");
        for (_, id, meaning) in TABLE {
            let row = format!("| {id} | {meaning} |");
            assert!(
                doc.contains(&row),
                "docs/diagnostics.md lacks the row `{row}`"
            );
        }
    }
}
