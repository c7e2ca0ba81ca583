"""Every number with its error bar: intervals against reference implementations and by simulation, DeLong's
and McNemar's tests, cross-validation folds and the sweep summaries built on them."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from trustthepixels.data.ingest.scan import Sample
from trustthepixels.data.loading.split import cross_validation_split
from trustthepixels.evaluation.compare import load_predictions, verdict
from trustthepixels.metric_registry import ABSTENTION, AT_THRESHOLD, METRICS
from trustthepixels.metrics.core import core_metrics
from trustthepixels.metrics.intervals import (
    BOOTSTRAPPED,
    clopper_pearson,
    measured,
    metric_intervals,
    resample_metrics,
    too_small_to_rank,
)
from trustthepixels.metrics.paired_tests import delong, holm, mcnemar, paired_bootstrap

from .conftest import compose_cfg


def _binormal(n_pos: int, n_neg: int, d: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    return labels, np.r_[rng.normal(d, 1, n_pos), rng.normal(0, 1, n_neg)]


def test_resampled_metrics_are_the_reported_ones():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    logits = np.round(rng.normal(size=500) + labels, 1)  # many ties
    reported = core_metrics(labels, logits)
    for name, value in zip(BOOTSTRAPPED, resample_metrics(labels, logits), strict=True):
        assert value == pytest.approx(reported[name], abs=1e-7), name


def test_every_registered_metric_is_computed_with_the_interval_the_registry_names():
    """A registry entry without its formula, or without its interval, fails here (and the report would show -)."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    logits = rng.normal(size=200) + labels
    values = bands = measured(labels, logits, threshold=0.3, temperature=1.7, n_resamples=50)
    for m in METRICS:
        for key in (m.key, m.key + AT_THRESHOLD) if m.decision else (m.key,):
            assert np.isfinite(values[key]), key
            if m.interval is not None:  # (a percentile interval of the upward-biased ECE may sit above it)
                low, high = bands[f"{key}_lo"], bands[f"{key}_hi"]
                assert low <= high and (low <= values[key] <= high or key.startswith("ece")), key
            else:
                assert f"{key}_lo" not in bands, key
        if m.interval == "binomial":  # exact: Clopper-Pearson on the images it counts
            chosen = labels == m.counts if m.counts is not None else np.ones(len(labels), bool)
            correct = round(values[m.key] * chosen.sum())
            assert (bands[f"{m.key}_lo"], bands[f"{m.key}_hi"]) == clopper_pearson(correct, int(chosen.sum()))
    assert {m.key for m in ABSTENTION} >= {"coverage", "accuracy_answered", "confident_errors"}


def test_clopper_pearson_matches_the_beta_quantiles_and_published_values():
    for k, n in ((0, 10), (8, 10), (37, 80), (80, 80)):
        low, high = clopper_pearson(k, n)
        assert low == pytest.approx(stats.beta.ppf(0.025, k, n - k + 1) if k else 0.0, abs=1e-9)
        assert high == pytest.approx(stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0, abs=1e-9)
    assert clopper_pearson(0, 10)[1] == pytest.approx(0.3085, abs=1e-4)  # the classic "rule of three" table value
    assert clopper_pearson(8, 10) == pytest.approx((0.4439, 0.9748), abs=1e-4)


def test_stratified_bootstrap_agrees_with_a_plain_reference_loop():
    rng = np.random.default_rng(1)
    labels, scores = _binormal(60, 60, 1.0, rng)
    ours = metric_intervals(labels, scores, n_resamples=4000, seed=3)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    reference = []
    for _ in range(4000):
        chosen = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        reference.append(roc_auc_score(labels[chosen], scores[chosen]))
    low, high = np.percentile(reference, [2.5, 97.5])
    assert ours["auroc_lo"] == pytest.approx(low, abs=0.015) and ours["auroc_hi"] == pytest.approx(high, abs=0.015)
    assert metric_intervals(labels, scores, seed=3) == metric_intervals(labels, scores, seed=3)  # seeded
    order = rng.permutation(len(labels))  # train.py scores in dataset order, eval.py in file order: one interval
    assert metric_intervals(labels[order], scores[order], seed=3) == metric_intervals(labels, scores, seed=3)


@pytest.mark.slow
def test_auroc_interval_covers_the_true_value_95_percent_of_the_time():
    """Binormal scores with separation d have AUROC = Phi(d / sqrt 2): count how often the interval holds it."""
    rng = np.random.default_rng(7)
    d = 1.0
    truth = stats.norm.cdf(d / math.sqrt(2))
    hits = 0
    trials = 300
    for trial in range(trials):
        labels, scores = _binormal(50, 50, d, rng)
        interval = metric_intervals(labels, scores, n_resamples=500, seed=trial)
        hits += interval["auroc_lo"] <= truth <= interval["auroc_hi"]
    assert 0.90 <= hits / trials <= 0.985, hits / trials


def _delong_reference(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """DeLong et al. (1988) as written: placement values from all pairs, psi = 1, 1/2, 0."""

    def components(scores):
        pos, neg = scores[labels == 1], scores[labels == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)

    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = components(a), components(b)
    m, n = len(v10_a), len(v01_a)
    s10 = np.cov(np.vstack([v10_a, v10_b]))
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    s = s10 / m + s01 / n
    variance = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    z = (auc_a - auc_b) / math.sqrt(variance)
    return auc_a - auc_b, 2 * stats.norm.sf(abs(z))


def test_delong_matches_the_definition_and_is_calibrated_under_the_null():
    rng = np.random.default_rng(2)
    labels, truth = _binormal(45, 55, 1.0, rng)
    a = np.round(truth + rng.normal(0, 0.7, 100), 1)  # ties on purpose
    b = np.round(truth + rng.normal(0, 1.2, 100), 1)
    ours = delong(labels, a, b)
    difference, p = _delong_reference(labels, a, b)
    assert ours["difference"] == pytest.approx(difference, abs=1e-12) and ours["p"] == pytest.approx(p, rel=1e-9)
    assert ours["auroc_a"] == pytest.approx(roc_auc_score(labels, a)) and ours["low"] < ours["difference"]
    # Two equally good models: p is uniform, so about 5% of comparisons come out "significant".
    rejections = 0
    for _ in range(400):
        labels, truth = _binormal(40, 40, 1.0, rng)
        rejections += delong(labels, truth + rng.normal(0, 1, 80), truth + rng.normal(0, 1, 80))["p"] < 0.05
    assert 0.02 <= rejections / 400 <= 0.09


def test_paired_bootstrap_and_mcnemar():
    rng = np.random.default_rng(5)
    labels, truth = _binormal(60, 60, 1.2, rng)
    good, noisy = truth + rng.normal(0, 0.3, 120), truth + rng.normal(0, 2.5, 120)
    boot = paired_bootstrap(labels, good, noisy, 1000, 0)
    test = delong(labels, good, noisy)
    assert boot["low"] > 0 and boot["p"] < 0.05 and test["p"] < 0.05
    assert "is better than" in verdict("good", "noisy", test, 120)
    same = delong(labels, good, good)
    assert same["p"] == 1.0 and "No detectable difference" in verdict("a", "b", same, 120)
    # 10 images only A gets right, 2 only B: two-sided exact p = 2 * P(X <= 2 | n = 12, 1/2) = 158 / 4096.
    y = np.r_[np.ones(12, int), np.zeros(20, int)]
    pred_a = y.copy()
    pred_b = y.copy()
    pred_b[:10] = 0  # B misses 10 AI images A catches
    pred_a[12:14] = 1  # A calls 2 real images AI that B gets right
    result = mcnemar(y, pred_a, pred_b)
    assert (result["only_a_right"], result["only_b_right"]) == (10, 2)
    assert result["p"] == pytest.approx(158 / 4096)


def test_small_sets_are_called_too_small_to_rank():
    assert too_small_to_rank(80, 0.70, 0.89) is not None and "320 images" in too_small_to_rank(80, 0.70, 0.89)
    assert too_small_to_rank(8000, 0.90, 0.92) is None


def _samples(n_ai: int, n_real: int) -> list[Sample]:
    return [
        Sample(Path(f"/d/{c}/{i}.jpg"), f"{c}/{i}.jpg", label)
        for c, label, n in (("AI", 1, n_ai), ("Real", 0, n_real))
        for i in range(n)
    ]


def test_cross_validation_folds_partition_the_data_and_keep_groups_whole():
    samples = _samples(53, 47)
    groups = [["AI/1.jpg", "Real/1.jpg", "AI/2.jpg"], ["Real/5.jpg", "Real/6.jpg"]]
    tests = []
    for fold in range(5):
        parts = cross_validation_split(samples, 5, fold, (0.8, 0.1, 0.1), seed=7, groups=groups)
        names = {name: {s.relpath for s in part} for name, part in parts.items()}
        assert sum(map(len, names.values())) == 100 and not (names["train"] & names["val"])
        assert not ((names["train"] | names["val"]) & names["test"])
        for group in groups:
            assert sum(bool(set(group) & part) for part in names.values()) == 1  # one part holds the group
        ai = sum(s.label for s in parts["test"])
        assert 9 <= ai <= 12 and 8 <= len(parts["test"]) - ai <= 11  # stratified: ~53/5 and ~47/5
        assert 8 <= len(parts["val"]) <= 13  # 1/9 of the other folds
        tests.append(names["test"])
    assert set().union(*tests) == {s.relpath for s in samples} and sum(map(len, tests)) == 100  # each once
    again = cross_validation_split(samples, 5, 2, (0.8, 0.1, 0.1), seed=7, groups=groups)
    assert {s.relpath for s in again["test"]} == tests[2]  # the same folds for the same seed, whatever the model


def test_holm_adjusts_several_pairs_and_leaves_one_alone():
    # Holm (1979): sorted p 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.04 -> made monotone: 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2]) == [0.2] and holm([0.9, 0.8]) == [1.0, 1.0]


def test_compare_py_judges_many_pairs_on_holm_adjusted_p_values(tmp_path):
    """Three models, three pairs: a difference at p = 0.03 alone is no verdict once three pairs are judged."""
    from trustthepixels.evaluation.compare import compare

    rng = np.random.default_rng(4)
    labels, truth = _binormal(60, 60, 1.0, rng)
    for name, noise in (("a", 0.8), ("b", 1.0), ("c", 1.2)):
        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "logit"])
            writer.writerows([f"{i}.png", y, z] for i, (y, z) in enumerate(zip(labels, truth + rng.normal(0, noise,
                             120), strict=True)))  # fmt: skip
    cfg = compose_cfg([f"inputs=[{tmp_path / 'a.csv'},{tmp_path / 'b.csv'},{tmp_path / 'c.csv'}]", "bootstrap=200"],
                      tmp_path, "compare")  # fmt: skip
    pairs = compare(cfg)["pairs"]
    raw = [p["delong"]["p"] for p in pairs]
    assert [p["delong"]["p_holm"] for p in pairs] == pytest.approx(holm(raw))
    for pair in pairs:
        better = pair["delong"]["p_holm"] < 0.05
        assert (
            pair["sentence"].startswith("No detectable") != better and "Holm-adjusted for 3 pairs" in pair["sentence"]
        )


def test_a_perfectly_separated_set_gets_an_honest_auroc_interval_and_the_warning():
    labels = np.r_[np.ones(40), np.zeros(40)].astype(int)
    logits = np.r_[np.linspace(1, 3, 40), np.linspace(-3, -1, 40)]
    bands = metric_intervals(labels, logits, n_resamples=200)
    # The percentile bootstrap says [1.000, 1.000]; 40 disjoint pairs, all ordered right, bound it exactly.
    assert bands["auroc_lo"] == pytest.approx(0.025 ** (1 / 40)) and bands["auroc_hi"] == 1.0
    assert bands["auroc_separated"] == 1.0
    warning = too_small_to_rank(80, bands["auroc_lo"], bands["auroc_hi"], separated=True)
    assert warning is not None and "perfectly separated" in warning
    assert "auroc_separated" not in metric_intervals(
        labels, logits + np.r_[np.zeros(39), -9, np.zeros(40)], n_resamples=50
    )


def test_compare_py_on_prediction_files(tmp_path):
    from trustthepixels.evaluation.compare import compare

    rng = np.random.default_rng(9)
    labels, truth = _binormal(80, 80, 1.5, rng)
    scores = {"sharp": truth + rng.normal(0, 0.3, 160), "blurry": rng.normal(0, 1, 160)}  # blurry: chance
    for name, values in scores.items():
        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "logit"])
            writer.writerows([f"img{i}.png", y, z] for i, (y, z) in enumerate(zip(labels, values, strict=True)))
    inputs = f"inputs=[{tmp_path / 'sharp.csv'},{tmp_path / 'blurry.csv'}]"
    cfg = compose_cfg([inputs, "names=[sharp,blurry]"], tmp_path, "compare")
    result = compare(cfg)
    (pair,) = result["pairs"]
    assert pair["sentence"].startswith("sharp is better than blurry on this data (160 images): AUROC +")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "DeLong" in report and "McNemar" in report and (tmp_path / "run" / "roc.png").is_file()
    assert set(load_predictions(tmp_path / "sharp.csv").thresholds.values()) == {0.5}  # no threshold column


def test_compare_py_scores_checkpoints_on_the_same_images(trained_checkpoint, tmp_path):
    """Checkpoints are scored here, each with the threshold chosen on its own validation split."""
    from trustthepixels.evaluation.compare import compare

    cfg = compose_cfg(
        [f"inputs=[{trained_checkpoint},{trained_checkpoint}]", "data.num_workers=0"], tmp_path, "compare"
    )
    result = compare(cfg)
    (pair,) = result["pairs"]
    assert result["images"] == 6 and pair["delong"]["p"] == 1.0 and pair["sentence"].startswith("No detectable")
    assert pair["a"] != pair["b"]  # the same model twice still gets two names


def test_delong_reproduces_the_published_asah_example():
    """The worked example of pROC (Robin et al. 2011, BMC Bioinformatics 12:77, and `?roc.test`): 113 patients
    after aneurysmal subarachnoid haemorrhage (Turck et al. 2010), poor outcome predicted by the WFNS grade and
    by S100B. pROC's `roc.test(roc(outcome, wfns), roc(outcome, s100b))` prints AUCs 0.8236789 and 0.7313686,
    Z = 2.209, p-value = 0.02718, 95% CI 0.01040618 to 0.17421442 (pROC 1.18, Debian's r-cran-proc)."""
    with open(Path(__file__).parent / "data" / "asah.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    labels = np.array([row["outcome"] == "Poor" for row in rows], dtype=int)
    wfns = np.array([float(row["wfns"]) for row in rows])
    s100b = np.array([float(row["s100b"]) for row in rows])
    assert len(rows) == 113 and labels.sum() == 41
    test = delong(labels, wfns, s100b)
    assert test["auroc_a"] == pytest.approx(0.8236789, abs=5e-8)
    assert test["auroc_b"] == pytest.approx(0.7313686, abs=5e-8)
    assert test["z"] == pytest.approx(2.209, abs=5e-4)
    assert test["p"] == pytest.approx(0.02718, abs=5e-6)
    assert (test["low"], test["high"]) == pytest.approx((0.01040618, 0.17421442), abs=5e-8)


def test_conformal_sets_keep_their_promise_per_class_by_simulation():
    """Class-conditional split conformal at alpha = 0.1: over many exchangeable draws of a validation split and new
    images, each class's true label is in its set between 1 - alpha and 1 - alpha + 1 / (n + 1) of the time."""
    from trustthepixels.metrics.conformal import fit_conformal

    rng = np.random.default_rng(11)
    alpha, n, trials = 0.1, 60, 400
    covered = {1: [], 0: []}
    for _ in range(trials):
        labels, logits = _binormal(n, n, 1.0, rng)
        sets = fit_conformal(labels, 1 / (1 + np.exp(-logits)), alpha)
        new_labels, new_logits = _binormal(200, 200, 1.0, rng)
        ai, real = sets.contains(1 / (1 + np.exp(-new_logits)))
        covered[1].append(ai[new_labels == 1].mean())
        covered[0].append(real[new_labels == 0].mean())
    for label in (0, 1):
        mean, se = np.mean(covered[label]), np.std(covered[label]) / np.sqrt(trials)
        assert 1 - alpha - 3 * se <= mean <= 1 - alpha + 1 / (n + 1) + 3 * se, (label, mean)


def test_the_promise_band_flags_sound_sets_as_rarely_as_it_says():
    """The band a measured set coverage is held to counts the calibration draw and the test draw: sets fitted on 200
    calibration images of a class (exchangeable with the 400 measured) fall below it about 2.5% of the time. A
    binomial band of the test draw alone put 10% of them there (cifake's "no" in docs/abstention.md)."""
    from scipy.stats import binom

    from trustthepixels.metrics.calibration import promise_band
    from trustthepixels.metrics.conformal import fit_conformal

    rng = np.random.default_rng(5)
    alpha, n_cal, n_test, trials = 0.05, 200, 400, 3000
    below, below_test_draw_only = 0, 0
    for _ in range(trials):
        labels, logits = _binormal(n_cal, n_cal, 1.0, rng)
        sets = fit_conformal(labels, 1 / (1 + np.exp(-logits)), alpha)
        new_labels, new_logits = _binormal(n_test, n_test, 1.0, rng)
        ai, _ = sets.contains(1 / (1 + np.exp(-new_logits)))
        coverage = ai[new_labels == 1].mean()
        below += coverage < promise_band(n_test, alpha, sets.n_ai)[0]
        below_test_draw_only += coverage < binom.ppf(0.025, n_test, 1 - alpha) / n_test
    assert 0.015 <= below / trials <= 0.035, below / trials
    assert below_test_draw_only / trials > 0.08
    assert promise_band(40, 0.05, 18) == (1.0, 1.0)  # too few to fit: every set holds the label
    assert promise_band(0, 0.05, 200)[0] != promise_band(0, 0.05, 200)[0]  # NaN: no image to measure


def test_conformal_sets_are_not_trivially_uncertain_and_abstain_where_the_classes_overlap():
    from trustthepixels.metrics.conformal import UNCERTAIN, fit_conformal
    from trustthepixels.metrics.selective import abstention_metrics

    rng = np.random.default_rng(12)
    for separation, most_uncertain in ((4.0, 0.1), (0.5, 1.0)):
        labels, logits = _binormal(200, 200, separation, rng)
        sets = fit_conformal(labels, 1 / (1 + np.exp(-logits)), 0.05)
        new_labels, new_logits = _binormal(500, 500, separation, rng)
        verdicts = sets.verdicts(1 / (1 + np.exp(-new_logits)))
        shares = abstention_metrics(new_labels, verdicts)
        assert (verdicts == UNCERTAIN).mean() <= most_uncertain
        if separation > 1:  # well separated: nearly every image answered, and answered right
            assert shares["coverage"] >= 0.9 and shares["accuracy_answered"] >= 0.95
        else:  # barely separated: the sets mostly hold both labels, so few confident errors
            assert shares["coverage"] <= 0.5 and shares["confident_errors"] <= 0.1
    # Too few validation images of a class for the level: that class is always in the set.
    few = fit_conformal(np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                        np.linspace(0.1, 0.9, 22), 0.05)  # fmt: skip
    assert few.ai_min_p == -np.inf and set(few.verdicts(np.array([0.01, 0.99]))) <= {"AI", UNCERTAIN}
