//! `tuneforge-agent`: one training run (data → prep → model → optim → eval → monitor,
//! checkpoints, resume), the run wrapped as a reinforcement-learning environment whose
//! actions change the learning rate, batch size and hidden widths mid-run, the policies and
//! baselines (fixed, random search, ASHA, PBT) and the study store.
//!
//! Not implemented yet: this crate is planned in `docs/ARCHITECTURE.md` and issue 6. It
//! holds no code until the real thing lands, so nothing here pretends to work.
