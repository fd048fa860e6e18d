//! The HTTP implementation of [`super::Coordinator`]. (Being built: see issue 3.)
