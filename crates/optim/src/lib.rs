//! `tuneforge-optim`: SGD and Adam(W) whose per-parameter state is remapped when a layer
//! changes width, learning-rate schedules (constant, step, cosine, warm-up and the
//! article's decay), global-norm gradient clipping.
//!
//! Not implemented yet: this crate is planned in `docs/ARCHITECTURE.md` and issue 4. It
//! holds no code until the real thing lands, so nothing here pretends to work.
