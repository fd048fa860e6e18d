//! Client-side rules: job types, minimum payments, prompt length, resource caps, balance preflight.
//! (Being built: see issue 2.)
