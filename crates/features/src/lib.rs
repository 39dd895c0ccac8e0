//! `tuneforge-features`: feature scores (variance, ANOVA F, mutual information,
//! permutation importance, gradient saliency) and an adaptive selector re-scored during
//! training.
//!
//! Not implemented yet: planned in `docs/ARCHITECTURE.md` and issue 3.
