//! The embedded local coordinator. (Being built: see issue 3.)
