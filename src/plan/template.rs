//! Templating with MiniJinja and `${{ … }}` delimiters. (Being built: see issue 2.)
