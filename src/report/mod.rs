//! Reports. (Being built: see issue 4.)
