//! How large a plan may grow, and the limits' defaults and ceilings, in one place.
//!
//! Two kinds of limit protect the loader. Those of the file itself — its size, how many values and how
//! much text it holds once aliases are expanded, how deep it nests — are checked while it is parsed
//! ([`super::source`]), before a plan exists to say anything, so they are fixed. Those of what the
//! plan asks for — steps once matrices are expanded, copies of one matrix, the work of a template — are
//! set by the plan's `limits:` block ([`super::types::Limits`]) within ceilings that no plan can pass.
//! A template's nesting is fixed ([`super::template::MAX_TEMPLATE_DEPTH`]): it protects the stack.
//! docs/security.md lists them all and says how to change them.

use super::types::Limits;

/// Steps once matrices are expanded: default.
pub const STEPS: u32 = 10_000;
/// Steps once matrices are expanded: the most a plan may ask for.
pub const STEPS_CEILING: u32 = 50_000;
/// Copies one matrix may make: default.
pub const MATRIX_COPIES: u32 = 1_000;
/// Copies one matrix may make: the most a plan may ask for.
pub const MATRIX_COPIES_CEILING: u32 = 10_000;
/// Fuel of one template render: default (about 32 MB of data at most).
pub const TEMPLATE_FUEL: u64 = 500_000;
/// Fuel of one template render: the most a plan may ask for.
pub const TEMPLATE_FUEL_CEILING: u64 = 2_000_000;
/// Fuel of every template rendered while a plan is loaded, together, as a multiple of one render's.
pub const LOAD_FUEL_RENDERS: u64 = 20;
/// How deep sub-plans may nest (`uses:` in a plan used by another …), the top plan not counted.
/// Fixed: each level is a file read and checked; a plan's steps once every sub-plan is expanded are
/// bounded by `limits.steps` of the top plan.
pub const INCLUDE_DEPTH: usize = 8;

/// The limits in force for a plan: its own figures within the ceilings, else the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InForce {
    /// Steps once matrices are expanded.
    pub steps: usize,
    /// Copies one matrix may make.
    pub matrix_copies: usize,
    /// Fuel of one render.
    pub template_fuel: u64,
}

impl InForce {
    /// The limits of a plan's `limits:` block.
    pub fn of(l: &Limits) -> InForce {
        InForce {
            steps: l.steps.unwrap_or(STEPS).clamp(1, STEPS_CEILING) as usize,
            matrix_copies: l
                .matrix_copies
                .unwrap_or(MATRIX_COPIES)
                .clamp(1, MATRIX_COPIES_CEILING) as usize,
            template_fuel: l
                .template_fuel
                .unwrap_or(TEMPLATE_FUEL)
                .clamp(1, TEMPLATE_FUEL_CEILING),
        }
    }

    /// Fuel of every template rendered while the plan is loaded.
    pub fn load_fuel(&self) -> u64 {
        self.template_fuel.saturating_mul(LOAD_FUEL_RENDERS)
    }
}

impl Default for InForce {
    fn default() -> Self {
        InForce::of(&Limits::default())
    }
}
