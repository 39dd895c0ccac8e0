//! What a pipeline should do, as plain serde data: [`PipelineConfig`] and its [`Step`]s.

use serde::{Deserialize, Serialize};

/// A preprocessing pipeline: steps applied in order. Fit it with
/// [`PipelineConfig::fit`](crate::PipelineConfig::fit).
///
/// In JSON:
///
/// ```json
/// {"steps": [
///   {"step": "impute", "columns": ["V6"], "strategy": "median"},
///   {"step": "clip", "method": {"iqr": {"k": 1.5}}},
///   {"step": "scale", "method": "standard"},
///   {"step": "one_hot", "columns": ["colour"], "unknown": "ignore"},
///   {"step": "drop_constant"}
/// ]}
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The steps, applied in order; each is fitted on the output of the steps before it.
    pub steps: Vec<Step>,
}

/// One preprocessing step. `columns` defaults to [`Columns::All`], meaning every column of
/// the kind the step handles at that point of the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Drop every row with a missing value in one of `columns`. Applies at transform too:
    /// [`Matrix::rows`](crate::Matrix::rows) says which input rows remain.
    DropMissingRows {
        /// Columns to check (numeric and categorical).
        #[serde(default)]
        columns: Columns,
    },
    /// Replace missing values with a value learnt from the training rows (or a constant).
    Impute {
        /// Columns to fill: numeric ones for mean and median, either kind for most-frequent,
        /// the constant's kind for a constant.
        #[serde(default)]
        columns: Columns,
        /// How to choose the fill value.
        strategy: Impute,
    },
    /// Clip outliers of numeric columns to bounds learnt from the training rows; missing
    /// values stay missing.
    Clip {
        /// Numeric columns to clip.
        #[serde(default)]
        columns: Columns,
        /// How to choose the bounds.
        method: Outliers,
    },
    /// Scale numeric columns: `x' = (x - offset) / scale` with offset and scale learnt from
    /// the training rows; missing values stay missing.
    Scale {
        /// Numeric columns to scale.
        #[serde(default)]
        columns: Columns,
        /// Which scaling.
        method: Scaling,
    },
    /// Replace each categorical column by one 0/1 column per training category, named
    /// `column=category` (e.g. `V1=3`), in sorted category order. A missing value encodes as
    /// all zeros and is reported.
    OneHot {
        /// Categorical columns to encode.
        #[serde(default)]
        columns: Columns,
        /// What to do at transform with a category not seen in training.
        #[serde(default)]
        unknown: Unknown,
    },
    /// Drop columns with at most one distinct non-missing value in the training rows.
    DropConstant {
        /// Columns to check (numeric and categorical).
        #[serde(default)]
        columns: Columns,
    },
}

/// Which columns a step applies to. JSON: `"all"` or a list of names.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "ColumnsRepr", into = "ColumnsRepr")]
pub enum Columns {
    /// Every column (present at that step) of a kind the step handles.
    #[default]
    All,
    /// Exactly these columns; each must exist at that step and be of a kind the step handles.
    Names(Vec<String>),
}

impl Columns {
    /// The named columns.
    pub fn names<S: AsRef<str>>(names: &[S]) -> Self {
        Columns::Names(names.iter().map(|s| s.as_ref().to_string()).collect())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ColumnsRepr {
    Keyword(AllKeyword),
    Names(Vec<String>),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AllKeyword {
    All,
}

impl From<ColumnsRepr> for Columns {
    fn from(r: ColumnsRepr) -> Self {
        match r {
            ColumnsRepr::Keyword(AllKeyword::All) => Columns::All,
            ColumnsRepr::Names(n) => Columns::Names(n),
        }
    }
}

impl From<Columns> for ColumnsRepr {
    fn from(c: Columns) -> Self {
        match c {
            Columns::All => ColumnsRepr::Keyword(AllKeyword::All),
            Columns::Names(n) => ColumnsRepr::Names(n),
        }
    }
}

/// How [`Step::Impute`] chooses a fill value. JSON: `"mean"`, `"median"`,
/// `"most_frequent"`, `{"constant": 0}` or `{"constant": "unknown"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Impute {
    /// Mean of the non-missing training values (numeric columns).
    Mean,
    /// Median of the non-missing training values; for an even count, the mean of the two
    /// middle values (numeric columns).
    Median,
    /// The most frequent training value; ties go to the smallest value (numeric order, or
    /// the level order of [`sort_levels`](crate::sort_levels) for categories), as in
    /// scikit-learn.
    MostFrequent,
    /// A fixed value: a number for numeric columns, text for categorical ones.
    Constant(Value),
}

/// How [`Step::Clip`] chooses bounds. JSON: `{"iqr": {"k": 1.5}}` or
/// `{"z_score": {"threshold": 3}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outliers {
    /// `[q1 - k·iqr, q3 + k·iqr]` with quartiles by linear interpolation (numpy's default).
    Iqr {
        /// Multiplier of the inter-quartile range, finite and ≥ 0 (Tukey: 1.5).
        k: f64,
    },
    /// `[mean - t·std, mean + t·std]` with the population standard deviation.
    ZScore {
        /// `t`, finite and > 0.
        threshold: f64,
    },
}

/// Which scaling [`Step::Scale`] applies. JSON: `"standard"`, `"min_max"`, `"max_abs"` or
/// `{"divide": 255}`.
///
/// The constant-column rules are scikit-learn's: a zero standard deviation, range or
/// maximum becomes scale 1, so a constant column scales to 0 (standard, min-max) or stays
/// as is (max-abs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scaling {
    /// `(x - mean) / std`, population std (ddof = 0), as scikit-learn's `StandardScaler`.
    Standard,
    /// `(x - min) / (max - min)` into `[0, 1]`, as `MinMaxScaler`.
    MinMax,
    /// `x / max|x|` into `[-1, 1]`, as `MaxAbsScaler`.
    MaxAbs,
    /// `x / divisor`, nothing learnt (e.g. pixels `/ 255`); divisor finite and non-zero.
    Divide(f64),
}

/// What [`Step::OneHot`] does at transform with a category not seen in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unknown {
    /// Fail with [`Error::UnknownCategory`](crate::Error::UnknownCategory).
    #[default]
    Error,
    /// Encode as all zeros and count it in
    /// [`TransformReport::unknown_categories`](crate::TransformReport::unknown_categories).
    Ignore,
}

/// A cell value: a number or a category. JSON: a number or a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A number.
    Number(f64),
    /// A category.
    Text(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Number(x) => write!(f, "{x}"),
            Value::Text(s) => write!(f, "{s:?}"),
        }
    }
}
