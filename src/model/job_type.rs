//! The six job types of the operator skill, and the one table of what the runner knows about each: its
//! name on the wire, the least it must pay, and how long such a job typically takes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::money::Money;

/// One of the six job types; anything else is refused before it is sent.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    /// Text generation from a prompt.
    Inference,
    /// Model training.
    Training,
    /// Text with images or other media.
    Multimodal,
    /// A model served by Ollama.
    Ollama,
    /// A streamed answer.
    Streaming,
    /// A health or monitoring check.
    Monitoring,
}

/// The JSON Schema of a plan's `job_type` field: one of the six names (editors complete them and flag
/// `inferense`), or a `${{ }}` template rendered at load or at run time.
pub fn plan_field_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = JobType::names().collect();
    schemars::json_schema!({
        "description": format!("The job type: one of {}, or a `${{{{ }}}}` template that renders to one.", names.join(", ")),
        "anyOf": [
            {"type": "string", "enum": names},
            {"type": "string", "pattern": "\\$\\{\\{", "description": "A template, e.g. `${{ matrix.job_type }}`."}
        ]
    })
}

/// What the runner knows about a job type.
struct Facts {
    job_type: JobType,
    name: &'static str,
    /// The built-in minimum payment in AITBC (a plan's `policy.min_payment` may change it).
    min_payment: i64,
    /// Typical seconds from submission to completion, for `estimated_time`.
    typical_seconds: f64,
}

/// The table. Minimums from the operator skill; typical times within the skill's "30–300 seconds for
/// job completion".
const FACTS: [Facts; 6] = [
    Facts {
        job_type: JobType::Inference,
        name: "inference",
        min_payment: 1,
        typical_seconds: 30.0,
    },
    Facts {
        job_type: JobType::Training,
        name: "training",
        min_payment: 10,
        typical_seconds: 300.0,
    },
    Facts {
        job_type: JobType::Multimodal,
        name: "multimodal",
        min_payment: 5,
        typical_seconds: 45.0,
    },
    Facts {
        job_type: JobType::Ollama,
        name: "ollama",
        min_payment: 1,
        typical_seconds: 30.0,
    },
    Facts {
        job_type: JobType::Streaming,
        name: "streaming",
        min_payment: 1,
        typical_seconds: 60.0,
    },
    Facts {
        job_type: JobType::Monitoring,
        name: "monitoring",
        min_payment: 1,
        typical_seconds: 60.0,
    },
];

impl JobType {
    /// All six, in the skill's order.
    pub const ALL: [JobType; 6] = [
        JobType::Inference,
        JobType::Training,
        JobType::Multimodal,
        JobType::Ollama,
        JobType::Streaming,
        JobType::Monitoring,
    ];

    fn facts(self) -> &'static Facts {
        // The table is in the enum's order.
        &FACTS[self as usize]
    }

    /// The name as the skill and the wire spell it.
    pub fn as_str(self) -> &'static str {
        self.facts().name
    }

    /// The built-in minimum payment.
    pub fn min_payment(self) -> Money {
        Money::from_int(self.facts().min_payment)
    }

    /// Typical seconds until a job of this type completes.
    pub fn typical_seconds(self) -> f64 {
        self.facts().typical_seconds
    }

    /// The type of this name; `None` for anything else.
    pub fn parse(name: &str) -> Option<JobType> {
        FACTS.iter().find(|f| f.name == name).map(|f| f.job_type)
    }

    /// The names of all six, for messages.
    pub fn names() -> impl Iterator<Item = &'static str> {
        FACTS.iter().map(|f| f.name)
    }

    /// "inference, training, …", for messages.
    pub fn list() -> String {
        Self::names().collect::<Vec<_>>().join(", ")
    }
}

impl FromStr for JobType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobType::parse(s).ok_or_else(|| format!("`{s}` is not a job type ({})", JobType::list()))
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_the_enums_order_and_matches_the_wire_names() {
        for (i, t) in JobType::ALL.iter().enumerate() {
            assert_eq!(FACTS[i].job_type, *t);
            assert_eq!(crate::api::JOB_TYPES[i], t.as_str());
            assert_eq!(JobType::parse(t.as_str()), Some(*t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert_eq!(JobType::parse("video"), None);
        assert_eq!(JobType::Training.min_payment(), Money::from_int(10));
    }
}
