//! `tuneforge-eval`: confusion matrix, accuracy, precision/recall/F1 (macro, micro,
//! weighted) and friends, equal to scikit-learn's on the same predictions.
//!
//! Not implemented yet: planned in `docs/ARCHITECTURE.md` and issue 3.
