//! The committed report and events schemas are the ones the types generate.

#[test]
fn committed_report_schema_is_current() {
    let generated =
        serde_json::to_string_pretty(&aitbc_flow::report::report_schema()).unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/report.schema.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "schemas/report.schema.json is stale: regenerate it with `cargo run -- schema report > schemas/report.schema.json`"
    );
}

#[test]
fn committed_events_schema_is_current() {
    let generated =
        serde_json::to_string_pretty(&aitbc_flow::report::model::events_schema()).unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/events.schema.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "schemas/events.schema.json is stale: regenerate it with `cargo run -- schema events > schemas/events.schema.json`"
    );
}
