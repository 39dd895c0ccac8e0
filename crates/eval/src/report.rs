//! The metrics of a confusion matrix as plain data, and their text rendering.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClassMetrics {
    /// tp / (tp + fp); 0 when the class is never predicted.
    pub precision: f64,
    /// tp / (tp + fn); 0 when the class is absent from the truth.
    pub recall: f64,
    /// 2·tp / (2·tp + fp + fn), the harmonic mean of the two; 0 when both are 0.
    pub f1: f64,
    /// The number of samples whose true class this is.
    pub support: u64,
}

/// Precision, recall and F1 averaged over the classes one way.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Averages {
    /// Averaged precision.
    pub precision: f64,
    /// Averaged recall.
    pub recall: f64,
    /// Averaged F1 (the average of per-class F1, not the F1 of the averages).
    pub f1: f64,
}

/// Every label metric of a [`ConfusionMatrix`](crate::ConfusionMatrix), as returned by
/// [`ConfusionMatrix::report`](crate::ConfusionMatrix::report).
///
/// The serde form (JSON and the like) has exactly these fields. [`to_text`](Self::to_text)
/// renders scikit-learn's `classification_report` layout; `Display` does so with two
/// digits, scikit-learn's default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClassificationReport {
    /// One entry per class, indexed by class.
    pub per_class: Vec<ClassMetrics>,
    /// Fraction of samples predicted correctly (equal to every micro average here).
    pub accuracy: f64,
    /// Mean recall over the classes present in the truth (scikit-learn's
    /// `balanced_accuracy_score`: absent classes are left out, not counted as 0).
    pub balanced_accuracy: f64,
    /// Unweighted mean over all classes, including classes absent from the data (0).
    pub macro_avg: Averages,
    /// Computed from the summed counts of all classes.
    pub micro_avg: Averages,
    /// Mean over all classes weighted by support.
    pub weighted_avg: Averages,
    /// The number of samples.
    pub support: u64,
}

impl ClassificationReport {
    /// The report as text in scikit-learn's `classification_report` layout, classes named
    /// by their index, values with `digits` decimals.
    pub fn to_text(&self, digits: usize) -> String {
        let names: Vec<String> = (0..self.per_class.len()).map(|c| c.to_string()).collect();
        self.render(&names, digits)
    }

    /// As [`to_text`](Self::to_text) with the classes named by `names` (one per class,
    /// like scikit-learn's `target_names`).
    ///
    /// # Errors
    /// [`Error::NameCount`] when `names` does not have one entry per class.
    pub fn to_text_with_names<S: AsRef<str>>(&self, names: &[S], digits: usize) -> Result<String> {
        if names.len() != self.per_class.len() {
            return Err(Error::NameCount { expected: self.per_class.len(), actual: names.len() });
        }
        Ok(self.render(names, digits))
    }

    /// scikit-learn 1.9's `classification_report` format strings, transcribed.
    fn render<S: AsRef<str>>(&self, names: &[S], digits: usize) -> String {
        const LONGEST_HEADING: &str = "weighted avg";
        let name_width = names.iter().map(|n| n.as_ref().chars().count()).max().unwrap_or(0);
        let w = name_width.max(LONGEST_HEADING.len()).max(digits);
        let d = digits;

        let mut out = String::new();
        // `write!` to a `String` cannot fail.
        let _ = write!(out, "{:>w$} ", "");
        for header in ["precision", "recall", "f1-score", "support"] {
            let _ = write!(out, " {header:>9}");
        }
        out.push_str("\n\n");
        let row = |out: &mut String, name: &str, p: f64, r: f64, f: f64, support: u64| {
            let _ = writeln!(out, "{name:>w$}  {p:>9.d$} {r:>9.d$} {f:>9.d$} {support:>9}");
        };
        for (name, m) in names.iter().zip(&self.per_class) {
            row(&mut out, name.as_ref(), m.precision, m.recall, m.f1, m.support);
        }
        out.push('\n');
        let _ =
            writeln!(out, "{:>w$}  {:>9.d$} {:>9.d$} {:>9.d$} {:>9}", "accuracy", "", "", self.accuracy, self.support);
        for (heading, a) in [("macro avg", &self.macro_avg), ("weighted avg", &self.weighted_avg)] {
            row(&mut out, heading, a.precision, a.recall, a.f1, self.support);
        }
        out
    }
}

impl fmt::Display for ClassificationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text(2))
    }
}

#[cfg(test)]
mod tests {
    use crate::{ConfusionMatrix, Error};

    #[test]
    fn text_matches_scikit_learn_layout() {
        // from sklearn.metrics import classification_report
        // print(classification_report([0, 1, 2, 2, 2], [0, 0, 2, 2, 1], labels=[0, 1, 2, 3],
        //       target_names=["ant", "bee", "cat", "dog"]))
        let mut m = ConfusionMatrix::new(4).unwrap();
        m.update(&[0, 1, 2, 2, 2], &[0, 0, 2, 2, 1]).unwrap();
        let text = m.report().to_text_with_names(&["ant", "bee", "cat", "dog"], 2).unwrap();
        let expected = "              precision    recall  f1-score   support

         ant       0.50      1.00      0.67         1
         bee       0.00      0.00      0.00         1
         cat       1.00      0.67      0.80         3
         dog       0.00      0.00      0.00         0

    accuracy                           0.60         5
   macro avg       0.38      0.42      0.37         5
weighted avg       0.70      0.60      0.61         5
";
        assert_eq!(text, expected);
        assert_eq!(m.report().to_string(), m.report().to_text(2));
    }

    #[test]
    fn wrong_name_count_is_an_error() {
        let r = ConfusionMatrix::new(3).unwrap().report();
        assert_eq!(r.to_text_with_names(&["a", "b"], 2), Err(Error::NameCount { expected: 3, actual: 2 }));
    }

    #[test]
    fn long_names_widen_the_first_column() {
        let mut m = ConfusionMatrix::new(2).unwrap();
        m.update(&[0, 1], &[0, 1]).unwrap();
        let text = m.report().to_text_with_names(&["a", "a rather long name"], 3).unwrap();
        assert!(text.starts_with(&format!("{:>18}  precision", "")));
        assert!(text.contains("\na rather long name      1.000"));
    }
}
