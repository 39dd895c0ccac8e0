//! Column statistics over non-missing values, matching numpy / scikit-learn conventions.

/// Sorts category levels as the loader (and scikit-learn's encoders) do: numerically when
/// every level is a number, lexicographically otherwise.
pub fn sort_levels(levels: &mut [String]) {
    let numbers: Option<Vec<f64>> = levels.iter().map(|l| parse_number(l)).collect();
    match numbers {
        Some(_) => levels.sort_by(|a, b| {
            let (x, y) = (parse_number(a).unwrap_or(0.0), parse_number(b).unwrap_or(0.0));
            x.total_cmp(&y).then_with(|| a.cmp(b))
        }),
        None => levels.sort(),
    }
}

fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

/// The non-missing values, sorted.
pub(crate) fn sorted_present(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Mean of non-missing values; `None` when there are none.
pub(crate) fn mean(values: &[f64]) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for &x in values.iter().filter(|x| !x.is_nan()) {
        sum += x;
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

/// Mean and population variance (ddof = 0) of non-missing values, and their count.
pub(crate) fn mean_var(values: &[f64]) -> Option<(f64, f64, usize)> {
    let m = mean(values)?;
    let (mut ss, mut n) = (0.0, 0usize);
    for &x in values.iter().filter(|x| !x.is_nan()) {
        ss += (x - m) * (x - m);
        n += 1;
    }
    Some((m, ss / n as f64, n))
}

/// Median of sorted values: the middle one, or the mean of the two middle ones.
pub(crate) fn median_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    Some(if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 })
}

/// Quantile `q` in `[0, 1]` of sorted values by linear interpolation (numpy's default).
pub(crate) fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let pos = q * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let frac = pos - lo as f64;
    Some(sorted[lo] + frac * (sorted[hi] - sorted[lo]))
}

/// Most frequent of sorted values; ties go to the smallest.
pub(crate) fn mode_sorted(sorted: &[f64]) -> Option<f64> {
    let mut best: Option<(f64, usize)> = None;
    let mut i = 0;
    while i < sorted.len() {
        let x = sorted[i];
        let mut j = i;
        while j < sorted.len() && sorted[j] == x {
            j += 1;
        }
        if best.is_none_or(|(_, c)| j - i > c) {
            best = Some((x, j - i));
        }
        i = j;
    }
    best.map(|(x, _)| x)
}

/// Most frequent level given per-level counts; ties go to the smallest level in
/// [`sort_levels`] order. `None` when every count is zero.
pub(crate) fn mode_level(levels: &[String], counts: &[usize]) -> Option<String> {
    let max = counts.iter().copied().max().filter(|&m| m > 0)?;
    let mut tied: Vec<String> = levels.iter().zip(counts).filter(|(_, c)| **c == max).map(|(l, _)| l.clone()).collect();
    sort_levels(&mut tied);
    tied.into_iter().next()
}

/// scikit-learn's `_is_constant_feature`: a variance within rounding error of zero.
pub(crate) fn is_constant_variance(var: f64, mean: f64, n: usize) -> bool {
    let eps = f64::EPSILON;
    let n = n as f64;
    var <= n * eps * var + (n * mean * eps).powi(2)
}

/// scikit-learn's `_handle_zeros_in_scale`: a scale below `10·eps` becomes 1.
pub(crate) fn nonzero_scale(scale: f64) -> f64 {
    if scale < 10.0 * f64::EPSILON { 1.0 } else { scale }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median_sorted(&[1.0, 2.0, 3.0, 4.0]), Some(2.5));
        assert_eq!(median_sorted(&[1.0, 5.0, 9.0]), Some(5.0));
        assert_eq!(median_sorted(&[]), None);
        assert_eq!(quantile_sorted(&[1.0, 2.0, 3.0, 4.0], 0.25), Some(1.75));
        assert_eq!(quantile_sorted(&[7.0], 0.75), Some(7.0));
    }

    #[test]
    fn modes_break_ties_to_the_smallest() {
        assert_eq!(mode_sorted(&[1.0, 1.0, 2.0, 3.0, 3.0]), Some(1.0));
        assert_eq!(mode_sorted(&[1.0, 3.0, 3.0]), Some(3.0));
        let levels = ["b", "a", "10", "9"].map(String::from);
        assert_eq!(mode_level(&levels, &[2, 2, 0, 1]).as_deref(), Some("a"));
        let numeric = ["10", "9"].map(String::from);
        assert_eq!(mode_level(&numeric, &[3, 3]).as_deref(), Some("9"));
        assert_eq!(mode_level(&numeric, &[0, 0]), None);
    }

    #[test]
    fn level_order() {
        let mut v = ["10", "9", "1"].map(String::from).to_vec();
        sort_levels(&mut v);
        assert_eq!(v, ["1", "9", "10"]);
        let mut v = ["b", "10", "a"].map(String::from).to_vec();
        sort_levels(&mut v);
        assert_eq!(v, ["10", "a", "b"]);
    }
}
