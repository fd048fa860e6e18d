//! The plan's JSON Schema: generated from [`super::types::Plan`], validated with `jsonschema`.
//! (Being built: see issue 2.)
