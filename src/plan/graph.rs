//! The step graph: edges, cycles, levels, matrix expansion. (Being built: see issue 2.)
