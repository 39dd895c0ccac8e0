//! `tuneforge-model`: candle networks built from a serde spec, whose hidden layers can be
//! widened (function-preserving, Net2WiderNet) or narrowed while training goes on.
//!
//! Not implemented yet: this crate is planned in `docs/ARCHITECTURE.md` and issue 4. It
//! holds no code until the real thing lands, so nothing here pretends to work.
