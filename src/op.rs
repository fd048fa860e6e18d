//! The operator skill's JSON interface (input JSON in, output JSON out). (Being built: see issue 3.)
