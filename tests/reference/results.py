"""Reference values for tests/api/results.rs, computed with scipy 1.17.1 / numpy.

Run: python3 tests/reference/results.py (pip install scipy). The players below are the ones the
test stores through the API; this computes each player's metric values from them by the contract's
rules (docs/api.md, "Experiment results") and compares cohorts with scipy. The test holds the
server's answer to the numbers printed here; nothing runs this in CI.
"""
import numpy as np
from scipy import stats

np.set_printoptions(precision=17)

# cohort, purchase amounts (numbers count; anything else is 0), sessions within the first hour,
# sessions later, edge (one session 1 µs before the hour ends, one exactly at it), pre (a session
# 1 µs before assignment, never counted)
PLAYERS = [
    ("control", [10.5, 2], 2, 1, False, False),
    ("control", [], 1, 0, False, False),
    ("control", [7], 0, 0, False, False),
    ("control", ["5", 3], 0, 1, True, False),
    ("control", [], 4, 0, False, True),
    ("control", [0.25, 1, 1], 1, 0, False, False),
    ("treatment", [20], 3, 1, False, False),
    ("treatment", [4.5, 4.5], 2, 0, False, False),
    ("treatment", [], 1, 0, False, True),
    ("treatment", [12, {"x": 1}], 0, 0, False, False),
    ("treatment", [1], 5, 1, True, False),
    ("treatment", [], 2, 0, False, False),
    ("treatment", [30, None], 3, 0, False, False),
    ("tiny", [3], 1, 0, False, False),
]


def numeric(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


METRICS = {
    "buyer": lambda p: 1.0 if p[1] else 0.0,
    "revenue": lambda p: float(sum(v for v in p[1] if numeric(v))),
    "sessions": lambda p: float(p[2] + p[3] + (2 if p[4] else 0)),
    "early_sessions": lambda p: float(p[2] + (1 if p[4] else 0)),
    "never": lambda p: 0.0,
}
ALPHA = 0.05

for key, value in METRICS.items():
    print(key)
    values = {c: np.array([value(p) for p in PLAYERS if p[0] == c]) for c in ("control", "treatment", "tiny")}
    for cohort, y in values.items():
        sd = y.std(ddof=1) if len(y) > 1 else 0.0
        print(f"  {cohort}: n={len(y)} total={y.sum()!r} mean={y.mean()!r} stddev={sd!r}")
    a, b = values["treatment"], values["control"]
    n, nc = len(a), len(b)
    m, mc = a.mean(), b.mean()
    s2, sc2 = a.var(ddof=1), b.var(ddof=1)
    se = np.sqrt(s2 / n + sc2 / nc)
    diff = m - mc
    if se == 0:
        print(f"  treatment vs control: diff={diff!r} se=0")
        continue
    r = stats.ttest_ind(a, b, equal_var=False)
    ci = r.confidence_interval(1 - ALPHA)
    z = stats.norm.ppf(1 - ALPHA / 2)
    print(f"  treatment vs control: diff={diff!r} p={r.pvalue!r} ci=[{ci.low!r}, {ci.high!r}]")
    if mc != 0:
        lift = diff / mc
        lse = np.sqrt(s2 / (n * mc**2) + m**2 * sc2 / (nc * mc**4))
        print(f"    lift={lift!r} liftci=[{lift - z * lse!r}, {lift + z * lse!r}]")
    print(f"    chance={stats.norm.cdf(diff / se)!r}")

# The weight-change test: 20/20 users under 1:1, then 4/36 under 1:9.
observed = np.array([24, 56])
naive = stats.chisquare(observed, f_exp=observed.sum() * np.array([0.1, 0.9]))
mixed = stats.chisquare(observed, f_exp=observed.sum() * np.array([0.3, 0.7]))
print("srm naive", repr(naive.statistic), repr(naive.pvalue), "mixed", repr(mixed.statistic), repr(mixed.pvalue))
