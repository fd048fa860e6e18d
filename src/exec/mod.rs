//! The executor. (Being built: see issue 4.)
