//! The statistics of experiment results (`experimentResults`, docs/api.md "Experiment results"):
//! per-cohort summaries from (n, Σy, Σy²), Welch's t-test against control with its interval, the
//! relative lift with a delta-method interval, the chance to beat control, and the sample-ratio
//! check with expected shares mixed over the experiment's weight phases.
//!
//! Distributions come from `statrs`. Measured against scipy (tests below): statrs 0.18's quantiles
//! of Student's t and of the normal agree to about 1e-15 relative, while its normal CDF (`erfc`) is
//! good to about 3e-11, so the chance to beat control agrees to 1e-10, inside the contract's 1e-9.
//! statrs' own tests hold `StudentsT::inverse_cdf` only to about 1e-3, so a quantile whose CDF
//! residual shows it is off is refined with Newton steps on the CDF; an accurate one is left alone,
//! since steps on a CDF that is itself off by 3e-11 would move it away from the true value.

use statrs::distribution::{ChiSquared, Continuous, ContinuousCDF, Normal, StudentsT};

/// A cohort's values for one metric, as the database aggregates them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub n: u64,
    pub sum: f64,
    pub sum_of_squares: f64,
}

impl Sample {
    /// Σy/n, 0 when n = 0.
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }

    /// The sample variance (n − 1 denominator), 0 when n < 2.
    pub fn variance(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let n = self.n as f64;
        // Rounding can leave a hair below zero when every value is equal.
        ((self.sum_of_squares - self.sum * self.sum / n) / (n - 1.0)).max(0.0)
    }

    pub fn stddev(&self) -> f64 {
        self.variance().sqrt()
    }
}

/// A cohort against control. Interval fields are `None` where the contract says null.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub diff: f64,
    pub diff_ci: Option<[f64; 2]>,
    pub lift: Option<f64>,
    pub lift_ci: Option<[f64; 2]>,
    pub p_value: Option<f64>,
    pub chance_to_beat_control: f64,
    pub significant: Option<bool>,
}

/// `cohort` against `control` at significance level `alpha` (0 < alpha < 0.5, checked by the
/// caller); `None` when either side has fewer than 2 users.
pub fn compare(cohort: &Sample, control: &Sample, alpha: f64) -> Option<Comparison> {
    if cohort.n < 2 || control.n < 2 {
        return None;
    }
    let (n, n_c) = (cohort.n as f64, control.n as f64);
    let (mean, mean_c) = (cohort.mean(), control.mean());
    let (var_n, var_c_n) = (cohort.variance() / n, control.variance() / n_c);
    let diff = mean - mean_c;
    let se = (var_n + var_c_n).sqrt();
    let lift = (mean_c != 0.0).then(|| diff / mean_c);
    if se == 0.0 {
        let chance = if diff > 0.0 {
            1.0
        } else if diff < 0.0 {
            0.0
        } else {
            0.5
        };
        return Some(Comparison {
            diff,
            diff_ci: None,
            lift,
            lift_ci: None,
            p_value: None,
            chance_to_beat_control: chance,
            significant: None,
        });
    }
    // Welch–Satterthwaite degrees of freedom.
    let dof = se.powi(4) / (var_n.powi(2) / (n - 1.0) + var_c_n.powi(2) / (n_c - 1.0));
    let t = student_t(dof)?;
    let p_value = (2.0 * t.sf((diff / se).abs())).min(1.0);
    let q = quantile(&t, 1.0 - alpha / 2.0);
    let z_dist = standard_normal();
    let z = quantile(&z_dist, 1.0 - alpha / 2.0);
    let lift_ci = lift.map(|lift| {
        let lift_se = (cohort.variance() / (n * mean_c.powi(2))
            + mean.powi(2) * control.variance() / (n_c * mean_c.powi(4)))
        .sqrt();
        [lift - z * lift_se, lift + z * lift_se]
    });
    Some(Comparison {
        diff,
        diff_ci: Some([diff - q * se, diff + q * se]),
        lift,
        lift_ci,
        p_value: Some(p_value),
        chance_to_beat_control: z_dist.cdf(diff / se),
        significant: Some(p_value < alpha),
    })
}

/// The share each cohort is expected to hold, mixed over the experiment's weight phases: phase p
/// contributes its `users` with the shares its weights gave then. `weights` of every phase are in
/// the same cohort order. Without users, the last phase's shares.
pub fn expected_shares(phases: &[Phase]) -> Vec<f64> {
    let cohorts = phases.last().map_or(0, |phase| phase.weights.len());
    let total: u64 = phases.iter().map(|phase| phase.users).sum();
    let shares = |phase: &Phase| -> Vec<f64> {
        let sum: f64 = phase.weights.iter().sum();
        phase
            .weights
            .iter()
            .map(|weight| if sum > 0.0 { weight / sum } else { 0.0 })
            .collect()
    };
    if total == 0 {
        return phases.last().map(shares).unwrap_or_default();
    }
    let mut expected = vec![0.0; cohorts];
    for phase in phases {
        for (cohort, share) in shares(phase).into_iter().enumerate().take(cohorts) {
            expected[cohort] += phase.users as f64 * share;
        }
    }
    expected.iter().map(|users| users / total as f64).collect()
}

/// The analysed users assigned while one set of weights was in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub users: u64,
    pub weights: Vec<f64>,
}

/// The outcome of the sample-ratio-mismatch check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRatio {
    pub checked: bool,
    pub ok: bool,
    pub chi_square: Option<f64>,
    pub p_value: Option<f64>,
}

/// Below this p-value the split is reported as a mismatch (GrowthBook's threshold).
pub const SRM_P_VALUE: f64 = 0.001;
/// Users needed per cohort with an expected share before the check is trusted.
const SRM_USERS_PER_COHORT: u64 = 8;

/// Pearson's χ² of the observed cohort sizes against the expected shares (same order).
pub fn sample_ratio(observed: &[u64], expected: &[f64]) -> SampleRatio {
    let total: u64 = observed.iter().sum();
    let counted: Vec<(f64, f64)> = observed
        .iter()
        .zip(expected)
        .filter(|(_, share)| **share > 0.0)
        .map(|(users, share)| (*users as f64, total as f64 * share))
        .collect();
    let checked = counted.len() >= 2 && total >= SRM_USERS_PER_COHORT * counted.len() as u64;
    if counted.len() < 2 || total == 0 {
        return SampleRatio {
            checked,
            ok: true,
            chi_square: None,
            p_value: None,
        };
    }
    let chi_square: f64 = counted
        .iter()
        .map(|(users, expected)| (users - expected).powi(2) / expected)
        .sum();
    let p_value = ChiSquared::new((counted.len() - 1) as f64)
        .map(|distribution| distribution.sf(chi_square))
        .unwrap_or(f64::NAN);
    SampleRatio {
        checked,
        ok: !checked || p_value >= SRM_P_VALUE,
        chi_square: Some(chi_square),
        p_value: Some(p_value),
    }
}

/// Student's t with `dof` degrees of freedom; `None` only for a `dof` that is not > 0, which
/// Welch's formula cannot give when se > 0 and both n ≥ 2.
fn student_t(dof: f64) -> Option<StudentsT> {
    StudentsT::new(0.0, 1.0, dof).ok()
}

fn standard_normal() -> Normal {
    Normal::standard()
}

/// A CDF residual above this means the crate's quantile is off and is refined.
const QUANTILE_RESIDUAL: f64 = 1e-10;

/// The `p` quantile: the crate's own, refined by Newton steps on the CDF when it is visibly off.
fn quantile<D: ContinuousCDF<f64, f64> + Continuous<f64, f64>>(distribution: &D, p: f64) -> f64 {
    let mut x = distribution.inverse_cdf(p);
    if (distribution.cdf(x) - p).abs() <= QUANTILE_RESIDUAL {
        return x;
    }
    for _ in 0..20 {
        let density = distribution.pdf(x);
        // Also stops on NaN.
        if density.is_nan() || density <= 0.0 {
            break;
        }
        let step = (distribution.cdf(x) - p) / density;
        x -= step;
        if step.abs() <= 1e-15 * x.abs().max(1.0) {
            break;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    //! Expected values computed with scipy 1.17.1 by `tests/reference/statistics.py` (numpy arrays
    //! of the raw values): for each case,
    //! `r = stats.ttest_ind(a, b, equal_var=False)`, `r.pvalue`, `r.df`,
    //! `r.confidence_interval(1 - alpha)`; `z = stats.norm.ppf(1 - alpha/2)`;
    //! `lift ± z·sqrt(s²/(n·m_c²) + m²·s_c²/(n_c·m_c⁴))`; `stats.norm.cdf(diff/se)`;
    //! `stats.t.ppf`, `stats.norm.ppf`, `stats.chi2.sf` for the distribution checks.
    use super::*;

    fn close(actual: f64, expected: f64, relative: f64) {
        let scale = expected.abs().max(1e-300);
        assert!(
            ((actual - expected) / scale).abs() <= relative,
            "{actual} vs {expected} (relative {relative})"
        );
    }

    fn sample(values: &[f64]) -> Sample {
        Sample {
            n: values.len() as u64,
            sum: values.iter().sum(),
            sum_of_squares: values.iter().map(|v| v * v).sum(),
        }
    }

    struct Expected {
        diff: f64,
        p_value: f64,
        ci: [f64; 2],
        lift: f64,
        lift_ci: [f64; 2],
        chance: f64,
    }

    fn check(cohort: &[f64], control: &[f64], alpha: f64, expected: Expected) {
        let result = compare(&sample(cohort), &sample(control), alpha).expect("both n ≥ 2");
        close(result.diff, expected.diff, 1e-12);
        let p_value = result.p_value.unwrap();
        assert!((p_value - expected.p_value).abs() <= 1e-12, "{p_value}");
        let ci = result.diff_ci.unwrap();
        close(ci[0], expected.ci[0], 1e-10);
        close(ci[1], expected.ci[1], 1e-10);
        close(result.lift.unwrap(), expected.lift, 1e-12);
        let lift_ci = result.lift_ci.unwrap();
        close(lift_ci[0], expected.lift_ci[0], 1e-10);
        close(lift_ci[1], expected.lift_ci[1], 1e-10);
        close(result.chance_to_beat_control, expected.chance, 1e-10);
        assert_eq!(result.significant, Some(expected.p_value < alpha));
    }

    #[test]
    fn conversions_match_scipy() {
        let cohort: Vec<f64> = [1.0; 30].into_iter().chain([0.0; 70]).collect();
        let control: Vec<f64> = [1.0; 20].into_iter().chain([0.0; 80]).collect();
        check(
            &cohort,
            &control,
            0.05,
            Expected {
                diff: 0.09999999999999998,
                p_value: 0.10350970420052573, // df 194.4490674318508
                ci: [-0.020570981115070636, 0.2205709811150706],
                lift: 0.4999999999999999,
                lift_ci: [-0.24359750839674787, 1.2435975083967477],
                chance: 0.9490539634524318,
            },
        );
        close(sample(&cohort).stddev(), 0.4605661864718382, 1e-12);
    }

    #[test]
    fn counts_match_scipy_at_alpha_0_1() {
        check(
            &[0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 0.0, 1.0, 2.0],
            &[0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0],
            0.1,
            Expected {
                diff: 1.0,
                p_value: 0.49133246426458593, // df 11.765291461554725
                ci: [-1.5132291398803326, 3.5132291398803317],
                lift: 0.4,
                lift_ci: [-0.5839169881522037, 1.3839169881522038],
                chance: 0.7612542649052041,
            },
        );
    }

    #[test]
    fn sums_match_scipy_at_alpha_0_01() {
        check(
            &[12.5, 0.0, 3.25, 99.0, 7.0, 0.0, 0.0, 41.5],
            &[10.0, 0.0, 0.0, 5.5, 2.0, 0.5],
            0.01,
            Expected {
                diff: 17.40625,
                p_value: 0.20053042107804636, // df 7.249207996037376
                ci: [-25.352772827284937, 60.16527282728494],
                lift: 5.802083333333333,
                lift_ci: [-8.417998623523545, 20.02216529019021],
                chance: 0.920439365664696,
            },
        );
        close(
            sample(&[12.5, 0.0, 3.25, 99.0, 7.0, 0.0, 0.0, 41.5]).stddev(),
            34.656976596144595,
            1e-12,
        );
    }

    #[test]
    fn quantiles_match_scipy() {
        for (p, dof, expected) in [
            (0.975, 3.7, 2.8675207071911895),
            (0.995, 1.5, 17.820310514462804),
            (0.95, 250.3, 1.6509641298230793),
            (0.975, 12345.6, 1.9601561582595104),
            (0.999, 2.01, 22.055363742553368),
        ] {
            close(quantile(&student_t(dof).unwrap(), p), expected, 1e-12);
        }
        for (p, expected) in [
            (0.975, 1.959963984540054),
            (0.995, 2.5758293035489004),
            (0.95, 1.6448536269514722),
            (0.9995, 3.2905267314919255),
        ] {
            close(quantile(&standard_normal(), p), expected, 1e-13);
        }
    }

    #[test]
    fn edges_follow_the_contract() {
        let two = sample(&[1.0, 2.0]);
        assert_eq!(compare(&sample(&[1.0]), &two, 0.05), None, "n < 2");
        assert_eq!(compare(&two, &sample(&[]), 0.05), None);
        assert_eq!(sample(&[]).mean(), 0.0);
        assert_eq!(sample(&[4.0]).stddev(), 0.0);

        // Zero variance on both sides: no test, the chance says which side is ahead.
        let flat = |value: f64| sample(&[value; 5]);
        for (cohort, control, chance) in [(3.0, 2.0, 1.0), (1.0, 2.0, 0.0), (2.0, 2.0, 0.5)] {
            let result = compare(&flat(cohort), &flat(control), 0.05).unwrap();
            assert_eq!(result.chance_to_beat_control, chance);
            assert_eq!(
                (
                    result.p_value,
                    result.diff_ci,
                    result.lift_ci,
                    result.significant
                ),
                (None, None, None, None)
            );
            assert_eq!(result.lift, Some((cohort - control) / control));
        }
        // Control mean 0: no lift, but the t-test stands.
        let result = compare(
            &sample(&[0.0, 1.0, 2.0]),
            &sample(&[0.0, 0.0, 1.0, -1.0]),
            0.05,
        )
        .unwrap();
        assert_eq!((result.lift, result.lift_ci), (None, None));
        assert!(result.p_value.is_some());
    }

    /// A distribution whose quantile function is off by 1e-3, as statrs' Student's t may be.
    struct Rough(StudentsT);

    impl ContinuousCDF<f64, f64> for Rough {
        fn cdf(&self, x: f64) -> f64 {
            self.0.cdf(x)
        }
        fn inverse_cdf(&self, p: f64) -> f64 {
            self.0.inverse_cdf(p) * 1.001
        }
    }

    impl statrs::statistics::Min<f64> for Rough {
        fn min(&self) -> f64 {
            self.0.min()
        }
    }

    impl statrs::statistics::Max<f64> for Rough {
        fn max(&self) -> f64 {
            self.0.max()
        }
    }

    impl Continuous<f64, f64> for Rough {
        fn pdf(&self, x: f64) -> f64 {
            self.0.pdf(x)
        }
        fn ln_pdf(&self, x: f64) -> f64 {
            self.0.ln_pdf(x)
        }
    }

    #[test]
    fn a_quantile_that_is_off_is_refined_on_the_cdf() {
        close(
            quantile(&Rough(student_t(3.7).unwrap()), 0.975),
            2.8675207071911895,
            1e-12,
        );
    }

    #[test]
    fn chi_square_survival_matches_scipy() {
        for (x, df, expected) in [
            (3.2, 1.0, 0.07363827012030258),
            (15.7, 2.0, 0.0003897519682527549),
            (0.4, 3.0, 0.9402424948393607),
            (40.0, 4.0, 4.328422607120966e-08),
        ] {
            let p = ChiSquared::new(df).unwrap().sf(x);
            close(p, expected, 1e-10);
        }
    }

    #[test]
    fn a_weight_change_is_no_mismatch_when_shares_are_mixed_over_phases() {
        // 600 users assigned at 1:1, then 400 at 1:3: 400 + 600 is what the mixture expects.
        let phases = [
            Phase {
                users: 600,
                weights: vec![1.0, 1.0],
            },
            Phase {
                users: 400,
                weights: vec![1.0, 3.0],
            },
        ];
        let expected = expected_shares(&phases);
        close(expected[0], 0.4, 1e-15);
        close(expected[1], 0.6, 1e-15);
        let mixed = sample_ratio(&[400, 600], &expected);
        assert_eq!((mixed.checked, mixed.ok), (true, true));
        assert_eq!(mixed.chi_square, Some(0.0));
        assert_eq!(mixed.p_value, Some(1.0));
        // Against today's weights alone the same split looks broken (scipy: χ² 120.0, p 6.326e-28).
        let naive = sample_ratio(&[400, 600], &[0.25, 0.75]);
        close(naive.chi_square.unwrap(), 120.0, 1e-12);
        close(naive.p_value.unwrap(), 6.326068263677272e-28, 1e-9);
        assert_eq!((naive.checked, naive.ok), (true, false));
    }

    #[test]
    fn the_check_needs_eight_users_per_cohort_and_two_cohorts() {
        let few = sample_ratio(&[10, 5], &[0.5, 0.5]);
        assert!(!few.checked && few.ok, "{few:?}");
        let one = sample_ratio(&[100, 0], &[1.0, 0.0]);
        assert_eq!((one.checked, one.ok, one.chi_square), (false, true, None));
        let nobody = expected_shares(&[Phase {
            users: 0,
            weights: vec![1.0, 3.0],
        }]);
        assert_eq!(nobody, [0.25, 0.75]);
    }
}
