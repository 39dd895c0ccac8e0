//! Exact floating-point summation, so that merged accumulators equal one-shot ones bit
//! for bit.
//!
//! [`ExactSum`] keeps the running sum as a list of non-overlapping `f64` partials whose
//! exact (real-number) total is the exact total of every value added (Shewchuk, "Adaptive
//! Precision Floating-Point Arithmetic and Fast Robust Geometric Predicates", 1997; the
//! algorithm behind Python's `math.fsum`). [`ExactSum::value`] rounds that exact total
//! once, correctly, so the result depends only on the multiset of values added, never on
//! the order or the grouping: merging the partial sums of several workers gives the same
//! `f64` as adding everything in one place.

/// An exact sum of finite `f64` values.
///
/// The values added must be finite and their partial sums must stay far from overflow;
/// the crate only adds log losses, which lie in `[0, 37)`.
///
/// Two sums are equal when their [`value`](ExactSum::value)s are: the same total can be
/// held by different partials (e.g. after a serialisation round trip).
#[derive(Debug, Clone, Default)]
pub(crate) struct ExactSum {
    /// Non-overlapping partials, increasing in magnitude; their exact sum is the total.
    partials: Vec<f64>,
}

impl ExactSum {
    /// Adds `x` exactly.
    pub(crate) fn add(&mut self, mut x: f64) {
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        self.partials.push(x);
    }

    /// Adds everything `other` holds, exactly.
    pub(crate) fn merge(&mut self, other: &ExactSum) {
        for &p in &other.partials {
            self.add(p);
        }
    }

    /// The partials, for serialisation. Re-adding them one by one rebuilds the same sum.
    pub(crate) fn partials(&self) -> &[f64] {
        &self.partials
    }

    /// The exact total, correctly rounded to the nearest `f64` (ties to even).
    pub(crate) fn value(&self) -> f64 {
        let p = &self.partials;
        let mut n = p.len();
        let Some(&top) = p.last() else {
            return 0.0;
        };
        n -= 1;
        let mut hi = top;
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            let y_rounded = hi - x;
            lo = y - y_rounded;
            if lo != 0.0 {
                break;
            }
        }
        // `hi + lo` is exact, but the partials below `lo` may push a halfway case of
        // `hi + lo` off the tie: round it the other way when they share `lo`'s sign.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let y_rounded = x - hi;
            if y == y_rounded {
                hi = x;
            }
        }
        hi
    }
}

impl PartialEq for ExactSum {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

#[cfg(test)]
mod tests {
    use super::ExactSum;

    fn sum(values: &[f64]) -> f64 {
        let mut s = ExactSum::default();
        for &v in values {
            s.add(v);
        }
        s.value()
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(ExactSum::default().value(), 0.0);
    }

    #[test]
    fn cancellation_is_exact() {
        assert_eq!(sum(&[1e16, 1.0, -1e16]), 1.0);
        assert_eq!(sum(&[0.1; 10]), 1.0);
        // Naive left-to-right summation gives 0.9999999999999999 here.
        let naive: f64 = [0.1; 10].iter().sum();
        assert_ne!(naive, 1.0);
    }

    #[test]
    fn halfway_case_rounds_correctly() {
        // 1 + 2^-53 + 2^-106 is just above the midpoint between 1 and 1 + 2^-52.
        let v = sum(&[1.0, 2f64.powi(-53), 2f64.powi(-106)]);
        assert_eq!(v, 1.0 + 2f64.powi(-52));
        // Without the tiny term it is an exact tie and rounds to even (1.0).
        assert_eq!(sum(&[1.0, 2f64.powi(-53)]), 1.0);
    }

    #[test]
    fn order_and_grouping_do_not_matter() {
        let values: Vec<f64> = (1..200).map(|i| 1.0 / f64::from(i) + f64::from(i) * 1e-3).collect();
        let forward = sum(&values);
        let mut reversed = values.clone();
        reversed.reverse();
        assert_eq!(forward, sum(&reversed));
        let (a, b) = values.split_at(77);
        let mut left = ExactSum::default();
        a.iter().for_each(|&v| left.add(v));
        let mut right = ExactSum::default();
        b.iter().for_each(|&v| right.add(v));
        left.merge(&right);
        assert_eq!(left.value(), forward);
    }
}
