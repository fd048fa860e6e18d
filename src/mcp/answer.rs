//! What a tool call answers: a JSON object (the skill's output, a report, a dry run) and whether it is
//! a failure. It goes back as structured content, with the same JSON as text for clients that read
//! only text, and a failure as a tool error (`isError: true`) — the agent reads why, in the skill's
//! words, instead of a protocol error it cannot see.
//!
//! Every answer passes through [`Answer::into_result`], which takes out the server's secrets (the
//! coordinator token) wherever they appear: nothing the coordinator echoes back reaches the agent.

use rmcp::model::CallToolResult;
use serde::Serialize;
use serde_json::{Value, json};

use crate::model::Outcome;

/// A tool's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The structured content (a JSON object).
    pub value: Value,
    /// True for a tool error.
    pub is_error: bool,
}

impl Answer {
    /// A success.
    pub fn ok(value: impl Serialize) -> Answer {
        Answer {
            value: to_object(value),
            is_error: false,
        }
    }

    /// A tool error.
    pub fn error(value: impl Serialize) -> Answer {
        Answer {
            value: to_object(value),
            is_error: true,
        }
    }

    /// The skill's output: an error when its `validation_status` is `failed`.
    pub fn outcome(o: &Outcome) -> Answer {
        Answer {
            value: to_object(o),
            is_error: o.failed(),
        }
    }

    /// A tool error with only a message (bad arguments, a tool not offered).
    pub fn refused(message: impl Into<String>) -> Answer {
        Answer::error(json!({ "summary": message.into(), "validation_status": "failed" }))
    }

    /// The protocol's result, with every secret replaced by `***`.
    pub fn into_result(mut self, secrets: &[String]) -> CallToolResult {
        redact(&mut self.value, secrets);
        if self.is_error {
            CallToolResult::structured_error(self.value)
        } else {
            CallToolResult::structured(self.value)
        }
    }
}

/// Structured content is an object: anything else is wrapped as `{"value": …}`.
fn to_object(v: impl Serialize) -> Value {
    match serde_json::to_value(v) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => json!({ "value": other }),
        Err(e) => {
            json!({ "summary": format!("cannot write the answer: {e}"), "validation_status": "failed" })
        }
    }
}

/// Replaces every secret (of 4 characters or more: a shorter one would blot out ordinary words) in
/// every string and key of `v`.
pub fn redact(v: &mut Value, secrets: &[String]) {
    let secrets: Vec<&str> = secrets
        .iter()
        .map(String::as_str)
        .filter(|s| s.len() >= 4)
        .collect();
    if !secrets.is_empty() {
        walk(v, &secrets);
    }
}

fn clean(s: &str, secrets: &[&str]) -> Option<String> {
    secrets.iter().any(|x| s.contains(x)).then(|| {
        secrets
            .iter()
            .fold(s.to_string(), |acc, x| acc.replace(x, "***"))
    })
}

fn walk(v: &mut Value, secrets: &[&str]) {
    match v {
        Value::String(s) => {
            if let Some(c) = clean(s, secrets) {
                *s = c;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| walk(x, secrets)),
        Value::Object(m) => {
            let dirty: Vec<String> = m
                .keys()
                .filter(|k| clean(k, secrets).is_some())
                .cloned()
                .collect();
            for k in dirty {
                if let Some(x) = m.remove(&k) {
                    m.insert(clean(&k, secrets).unwrap_or(k), x);
                }
            }
            m.values_mut().for_each(|x| walk(x, secrets));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Operation;

    #[test]
    fn a_secret_never_leaves_in_a_result() {
        let mut o = Outcome::new(Operation::Status, "echo: token tok-123456 was refused");
        o.issues.push("Bearer tok-123456".into());
        o.result = Some(json!({"tok-123456": ["x tok-123456 y"]}));
        let r = Answer::outcome(&o).into_result(&["tok-123456".into(), "".into()]);
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("tok-123456"), "{text}");
        assert!(text.contains("echo: token *** was refused"), "{text}");
        assert_eq!(r.is_error, Some(false));
    }

    #[test]
    fn a_failed_outcome_is_a_tool_error_with_the_skills_fields() {
        let mut o = Outcome::new(Operation::Submit, "Invalid job type");
        o.validation_status = crate::model::ValidationStatus::Failed;
        let r = Answer::outcome(&o).into_result(&[]);
        assert_eq!(r.is_error, Some(true));
        let s = r.structured_content.unwrap();
        assert_eq!(s["summary"], "Invalid job type");
        assert_eq!(s["validation_status"], "failed");
        // The text block carries the same JSON, for clients that show text only.
        let text = &r.content[0].as_text().unwrap().text;
        assert_eq!(serde_json::from_str::<Value>(text).unwrap(), s);
    }
}
