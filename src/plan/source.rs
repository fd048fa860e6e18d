//! YAML source: parses a plan file into JSON values and a map from JSON pointers to positions.
//! (Being built: see issue 2.)
