//! "Did you mean": the one place that picks the closest valid name to a mistyped one, for plan
//! diagnostics, the client rules and the operator commands alike.

/// The closest of `candidates` to `name` when it is close enough to be a typo: by edit distance
/// (ignoring case), or, for a name of three letters or more, one that starts like it (`multi` →
/// `multimodal`).
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    let lower = name.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(&lower, c), *c))
        .filter(|(d, c)| *d < 3.max(c.len() / 3) && (*d > 0 || name != *c))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
        .or_else(|| {
            (lower.len() >= 3)
                .then(|| {
                    candidates
                        .iter()
                        .find(|c| c.starts_with(&lower) || lower.starts_with(**c))
                })
                .flatten()
                .map(|c| c.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::JOB_TYPES;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(closest("inferense", JOB_TYPES), Some("inference".into()));
        assert_eq!(closest("Inference", JOB_TYPES), Some("inference".into()));
        assert_eq!(closest("multi", JOB_TYPES), Some("multimodal".into()));
        assert_eq!(closest("video-upscale", JOB_TYPES), None);
        assert_eq!(closest("vi", JOB_TYPES), None);
    }
}
