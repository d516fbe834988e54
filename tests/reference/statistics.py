"""Reference values for src/domain/statistics.rs, computed with scipy 1.17.1 / numpy.

Run: python3 tests/reference/statistics.py (pip install scipy). The unit tests hold the Rust code to
the figures this prints; nothing runs it in CI (the numbers are recorded in the tests)."""
import numpy as np
from scipy import stats
np.set_printoptions(precision=17)
def case(name, a, b, alpha=0.05):
    a = np.array(a, dtype=float); b = np.array(b, dtype=float)
    r = stats.ttest_ind(a, b, equal_var=False)
    ci = r.confidence_interval(1 - alpha)
    n, nc = len(a), len(b)
    m, mc = a.mean(), b.mean()
    s2, sc2 = a.var(ddof=1), b.var(ddof=1)
    se = np.sqrt(s2/n + sc2/nc)
    diff = m - mc
    z = stats.norm.ppf(1 - alpha/2)
    lift = diff/mc
    lse = np.sqrt(s2/(n*mc**2) + m**2*sc2/(nc*mc**4))
    print(name, dict(n=n, sum=a.sum(), sumsq=(a*a).sum(), nc=nc, sumc=b.sum(), sumsqc=(b*b).sum()))
    print("  mean", repr(m), "stddev", repr(np.sqrt(s2)), "meanc", repr(mc))
    print("  diff", repr(diff), "p", repr(r.pvalue), "df", repr(r.df), "ci", repr(ci.low), repr(ci.high))
    print("  lift", repr(lift), "liftci", repr(lift - z*lse), repr(lift + z*lse))
    print("  chance", repr(stats.norm.cdf(diff/se)))
case("conv", [1]*30 + [0]*70, [1]*20 + [0]*80)
case("counts", [0,1,2,3,5,8,13,0,1,2], [0,0,1,1,2,2,3,3,4,4,5,5], alpha=0.1)
case("sums", [12.5, 0, 3.25, 99.0, 7.0, 0, 0, 41.5], [10.0, 0, 0, 5.5, 2.0, 0.5], alpha=0.01)
print("t quantiles")
for p, df in [(0.975, 3.7), (0.995, 1.5), (0.95, 250.3), (0.975, 12345.6), (0.999, 2.01)]:
    print(" ", p, df, repr(stats.t.ppf(p, df)))
print("norm quantiles")
for p in [0.975, 0.995, 0.95, 0.9995]:
    print(" ", p, repr(stats.norm.ppf(p)))
print("chi2 sf")
for x, df in [(3.2, 1), (15.7, 2), (0.4, 3), (40.0, 4)]:
    print(" ", x, df, repr(stats.chi2.sf(x, df)))
# SRM mixture: phase 1 (weights 1:1) 600 users, phase 2 (weights 1:3) 400 users; observed
n1, n2 = 600, 400
e = np.array([(n1*0.5 + n2*0.25)/(n1+n2), (n1*0.5 + n2*0.75)/(n1+n2)])
obs = np.array([400, 600])
N = obs.sum()
chi = ((obs - N*e)**2/(N*e)).sum()
print("srm mixture e", repr(e[0]), repr(e[1]), "chi", repr(chi), "p", repr(stats.chi2.sf(chi, 1)))
naive = np.array([0.25, 0.75])
chi_n = ((obs - N*naive)**2/(N*naive)).sum()
print("srm naive chi", repr(chi_n), "p", repr(stats.chi2.sf(chi_n, 1)))
