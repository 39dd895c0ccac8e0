//! `tuneforge`: train candle networks and tune them while they train.
//!
//! This facade re-exports the pipeline crates so that one dependency brings them all:
//! [`loader`], [`prep`], [`features`], [`model`], [`optim`], [`eval`], [`monitor`] and
//! [`agent`]. Each is also usable alone; see `docs/ARCHITECTURE.md`.

pub use tuneforge_agent as agent;
pub use tuneforge_eval as eval;
pub use tuneforge_features as features;
pub use tuneforge_loader as loader;
pub use tuneforge_model as model;
pub use tuneforge_monitor as monitor;
pub use tuneforge_optim as optim;
pub use tuneforge_prep as prep;
