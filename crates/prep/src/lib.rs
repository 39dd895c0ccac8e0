//! `tuneforge-prep`: preprocessing that is fitted on training rows only and applied to any
//! table or batch: missing values, outliers, scaling, one-hot encoding; serialisable.
//!
//! Not implemented yet: planned in `docs/ARCHITECTURE.md` and issue 3.
