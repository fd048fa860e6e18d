//! A JSON value kept as its text. A run's report holds an entry per step until the run ends, and a
//! step's outputs, request and performance metrics as JSON trees (a map, a string and an allocation
//! per key) weighed several times their text: 10,000 steps held ~40 MB of them (docs/performance.md).
//! What mostly goes back out (to the journal, the events and report.json) is kept as text and parsed
//! when something reads it.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON value as its text; written out as it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// The text of `v` (`null` for a value serde cannot write, which a `Value` never is).
    pub fn of<T: Serialize + ?Sized>(v: &T) -> JsonText {
        JsonText(serde_json::value::to_raw_value(v).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }

    /// `{}`.
    pub fn empty_object() -> JsonText {
        JsonText(RawValue::from_string("{}".into()).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }

    /// The text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The value, parsed from the text.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }

    /// The field `key` of an object (`None` for another value, or an object without it).
    pub fn field(&self, key: &str) -> Option<Value> {
        match self.to_value() {
            Value::Object(mut m) => m.remove(key),
            _ => None,
        }
    }

    /// Changes an object's fields (nothing for another value), and keeps the text of the result.
    pub fn update(&mut self, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
        if let Value::Object(mut m) = self.to_value() {
            f(&mut m);
            *self = JsonText::of(&m);
        }
    }
}

impl PartialEq for JsonText {
    /// The same value: the same text, or texts that read as equal values (an object's keys in
    /// another order).
    fn eq(&self, other: &JsonText) -> bool {
        self.0.get() == other.0.get() || self.to_value() == other.to_value()
    }
}

impl From<Value> for JsonText {
    fn from(v: Value) -> JsonText {
        JsonText::of(&v)
    }
}

// The schema of any JSON value, as for `serde_json::Value`.
impl schemars::JsonSchema for JsonText {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        <Value as schemars::JsonSchema>::schema_name()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Value as schemars::JsonSchema>::json_schema(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_the_text_and_reads_back_the_value() {
        let v = json!({"text": "hi \"there\"", "n": [1, 2.5, null], "z": {"a": true}});
        let t = JsonText::of(&v);
        assert_eq!(t.to_value(), v);
        // Written out as it is, inside a larger document, and read back the same.
        let doc = serde_json::to_string(&json!({"outputs": t})).unwrap();
        assert!(doc.contains(r#""text":"hi \"there\"""#), "{doc}");
        #[derive(Deserialize)]
        struct Doc {
            outputs: JsonText,
        }
        let back: Doc = serde_json::from_str(&doc).unwrap();
        assert_eq!(back.outputs, t);
        let back: Doc = serde_json::from_value(json!({"outputs": v})).unwrap();
        assert_eq!(back.outputs.to_value(), v);
        assert_eq!(JsonText::empty_object().to_value(), json!({}));
        assert_ne!(JsonText::of(&json!(1)), JsonText::of(&json!(2)));
        assert_eq!(
            JsonText::of(&json!({"a": 1, "b": 2})),
            JsonText::of(&json!({"b": 2, "a": 1}))
        );
        let mut m = JsonText::of(&json!({"a": 1}));
        m.update(|m| {
            m.insert("b".into(), json!("x"));
        });
        assert_eq!(m.get(), r#"{"a":1,"b":"x"}"#);
        assert_eq!(m.field("b"), Some(json!("x")));
        assert_eq!(m.field("c"), None);
        let mut n = JsonText::of(&json!([1]));
        n.update(|m| {
            m.insert("b".into(), json!(1));
        });
        assert_eq!(n.get(), "[1]");
    }
}
