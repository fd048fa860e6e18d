//! Any bytes as a plan file: loading gives a plan or diagnostics, each placed and printable, never a
//! panic or an abort; a plan that loads renders every step, for a preview and against outputs.
//! Run with `cargo +nightly fuzz run load_plan` from the repository (docs/security.md).

#![no_main]

use std::path::Path;

use aitbc_flow::plan::LoadOptions;
use aitbc_flow::plan::checked::{RunInfo, StepOutputs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Beside the fixtures, so that relative prompt files resolve as they do in the tests.
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/plans/valid/fuzz.yaml"));
    let options = LoadOptions {
        environment: Some(Default::default()),
        ..Default::default()
    };
    match aitbc_flow::plan::check::load_bytes(path, data, &options) {
        Ok(plan) => {
            let mut outputs = StepOutputs::new();
            for s in &plan.steps {
                let mut o = serde_json::Map::new();
                for n in aitbc_flow::plan::types::kind_outputs(s.kind.name()) {
                    o.insert(n.to_string(), serde_json::json!("x"));
                }
                outputs.insert(s.id.clone(), serde_json::Value::Object(o));
            }
            let run = RunInfo::default();
            for s in &plan.steps {
                let _ = plan.preview(s);
                let _ = plan.should_run(s, &outputs, &run);
                if let Err(d) = plan.render(s, &outputs, &run) {
                    let _ = d.to_string();
                }
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for d in errors {
                assert!(d.location.is_some(), "{d}");
                let text = d.to_string();
                assert!(
                    !text
                        .chars()
                        .any(|c| c != '\n' && aitbc_flow::text::is_unsafe(c)),
                    "{text:?}"
                );
            }
        }
    }
});
