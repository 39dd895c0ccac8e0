//! `tuneforge-features`: how much each input feature matters, and which features a
//! network should see while it trains.
//!
//! # What it is for
//!
//! A tuneforge run can re-weigh its inputs as it learns — the "adaptive feature
//! selection" of the original article: importance is estimated from the data and from the
//! model's own behaviour, re-estimated every few steps, and the trainer masks or weights
//! the input batch accordingly. This crate holds the statistics and the bookkeeping; it
//! knows nothing of candle, so it can be used (and tested) alone.
//!
//! # Central types
//!
//! - [`Matrix`]: a dense row-major `f64` feature matrix whose constructors check shape and
//!   finiteness once, so no score ever meets a NaN. Labels are `&[u32]` in
//!   `0..n_classes`, passed alongside.
//! - Scores, each one value per feature, larger = more important:
//!   [`variance`], [`f_classif`] (ANOVA F and p-values, as scikit-learn),
//!   [`mutual_info`] (plug-in estimate on equal-frequency bins),
//!   [`permutation_importance`] (given any `Fn(&Matrix) -> Vec<u32>` model and a score
//!   such as [`accuracy`]), and [`Saliency`] / [`gradient_saliency`] (mean `|∂loss/∂x|`
//!   from gradients the caller's autograd computed).
//! - [`AdaptiveSelector`]: per-feature weights smoothed over re-scorings
//!   (`w ← α·normalised + (1 − α)·w`) and a mask (top-k or threshold), applied to a
//!   training batch with [`AdaptiveSelector::apply_mask`] or
//!   [`AdaptiveSelector::apply_weights`]; serde state for checkpoints.
//! - [`Error`]: one `#[non_exhaustive]` enum with structured fields; nothing here panics
//!   on user data.
//!
//! # Key decisions
//!
//! - Functions, not "scorer" objects: a score is `fn(&Matrix, &[u32], n_classes) -> Vec`.
//!   The selector takes any score vector, so the trainer chooses (and mixes) the source.
//! - Degenerate cases are defined, not NaN: a constant feature has ANOVA `F = 0, p = 1`,
//!   a feature constant within every class but not overall has `F = +∞, p = 0`
//!   (scikit-learn returns `nan` with a warning). Otherwise [`f_classif`] matches
//!   scikit-learn's `f_classif` to 1e-6 (tests compare against committed fixtures made by
//!   `python3 scripts/fixtures/features.py`).
//! - Mutual information uses a deterministic plug-in estimator on rank bins, reproducible
//!   exactly by the fixture script's NumPy version, rather than scikit-learn's
//!   k-nearest-neighbour estimator, whose random jitter makes exact parity impossible.
//! - Scores are normalised to `[0, 1]` by their largest finite value before smoothing
//!   ([`normalise_scores`]), so F statistics, saliencies and accuracy drops can feed the
//!   same selector. The mask keeps everything until the first re-scoring.
//! - p-values come from `statrs`' regularised incomplete beta, in the form SciPy's
//!   `fdtrc` uses.
//!
//! # Example
//!
//! ```
//! use tuneforge_features::{AdaptiveSelector, Matrix, Selection, SelectorConfig, f_classif};
//!
//! // 4 rows × 3 features; feature 1 separates the two classes, 0 and 2 do not.
//! let x = Matrix::new(4, 3, vec![
//!     0.1, 0.0, 5.0,
//!     0.9, 0.1, 4.0,
//!     0.2, 1.0, 5.0,
//!     0.8, 0.9, 4.0,
//! ])?;
//! let labels = [0, 0, 1, 1];
//!
//! let config = SelectorConfig { selection: Selection::TopK(1), alpha: 0.5, rescore_every: 2 };
//! let mut selector = AdaptiveSelector::new(3, config)?;
//! assert_eq!(selector.mask(), &[true, true, true]); // nothing known yet
//!
//! for _step in 0..2 {
//!     // ... one training step on a masked batch ...
//!     if selector.tick() {
//!         let scores = f_classif(&x, &labels, 2)?.f;
//!         selector.rescore(&scores)?;
//!     }
//! }
//! assert_eq!(selector.rescorings(), 1);
//! assert_eq!(selector.selected(), vec![1]);
//!
//! let mut batch = vec![1.0_f32; 6]; // 2 rows × 3 features
//! selector.apply_mask(&mut batch, 3)?;
//! assert_eq!(batch, vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
//!
//! // Checkpoint and restore.
//! let saved = serde_json::to_string(&selector).unwrap();
//! let restored: AdaptiveSelector = serde_json::from_str(&saved).unwrap();
//! assert_eq!(restored, selector);
//! # Ok::<(), tuneforge_features::Error>(())
//! ```

mod error;
mod matrix;
mod permutation;
mod saliency;
mod scores;
mod selector;

pub use error::{Error, Result};
pub use matrix::Matrix;
pub use permutation::{PermutationConfig, PermutationImportance, accuracy, permutation_importance};
pub use saliency::{Saliency, gradient_saliency};
pub use scores::{AnovaF, DEFAULT_MI_BINS, f_classif, mutual_info, ranking, top_k, variance};
pub use selector::{AdaptiveSelector, Selection, SelectorConfig, normalise_scores};
