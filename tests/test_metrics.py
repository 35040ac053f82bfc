"""Membership-inference metrics, checked against scikit-learn and against cases worked by hand."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from sklearn import metrics as skm

from fedattack.metrics import (
    AttackMetrics,
    attack_metrics,
    auc,
    check_balanced,
    min_resolvable_fpr,
    per_class_accuracy,
    resolvable,
    roc_curve,
    tpr_at_fpr,
    weighted_metrics,
)

# Worked by hand below: members score 0.9, 0.8, 0.7, 0.3; non-members 0.75, 0.6, 0.2, 0.1.
HAND_LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0])
HAND_SCORES = np.array([0.9, 0.8, 0.7, 0.3, 0.75, 0.6, 0.2, 0.1])


def random_case(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    labels = rng.integers(0, 2, size=n)
    labels[:2] = [0, 1]  # both classes present
    if seed % 2:  # coarse scores: many ties, also between members and non-members
        scores = rng.integers(0, 6, size=n) / 5
    else:
        scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
    return labels, scores


@pytest.mark.parametrize("seed", range(40))
def test_roc_curve_and_auc_agree_with_sklearn(seed):
    labels, scores = random_case(seed)
    fpr, tpr, thresholds = roc_curve(labels, scores)
    sk_fpr, sk_tpr, sk_thresholds = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_array_equal(fpr, sk_fpr)
    np.testing.assert_array_equal(tpr, sk_tpr)
    np.testing.assert_array_equal(thresholds, sk_thresholds)
    assert auc(labels, scores) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(40))
def test_attack_metrics_agree_with_brute_force(seed):
    labels, scores = random_case(seed)
    threshold = float(np.median(scores))  # a score value: exercises score == threshold
    m = attack_metrics(labels, scores, threshold=threshold)

    predicted = scores >= threshold
    members = labels == 1
    assert m.attack_accuracy == pytest.approx(skm.accuracy_score(labels, predicted))
    assert m.tpr == pytest.approx(predicted[members].mean())
    assert m.fpr == pytest.approx(predicted[~members].mean())
    assert m.auc == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    candidates = [*np.unique(scores), np.inf]
    assert m.best_accuracy == pytest.approx(
        max(skm.accuracy_score(labels, scores >= t) for t in candidates)
    )
    sk_fpr, sk_tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    for target, got in ((0.001, m.tpr_at_0_1pct_fpr), (0.01, m.tpr_at_1pct_fpr)):
        if (~members).sum() * target < 5:  # fewer than 5 false positives allowed: unresolved
            assert got is None
        else:
            assert got == max(t for f, t in zip(sk_fpr, sk_tpr, strict=True) if f <= target)
    assert (m.n_members, m.n_nonmembers) == (int(members.sum()), int((~members).sum()))


def test_roc_and_tpr_at_fpr_by_hand():
    # Sorted by score: .9 m, .8 m, .75 n, .7 m, .6 n, .3 m, .2 n, .1 n. Each step down the list
    # adds one record, so the ROC points (fpr, tpr) are
    #   (0, 0) (0, .25) (0, .5) (.25, .5) (.25, .75) (.5, .75) (.5, 1) (.75, 1) (1, 1).
    # TPR at FPR <= .2: only points with fpr 0 qualify, best tpr .5 (no interpolation toward
    # (.25, .75)); at FPR <= .25: .75; at FPR <= .5: 1; at FPR <= 0: .5.
    fpr, tpr, thresholds = roc_curve(HAND_LABELS, HAND_SCORES)
    np.testing.assert_array_equal(fpr, [0, 0, 0, 0.25, 0.25, 0.5, 0.5, 0.75, 1])
    np.testing.assert_array_equal(tpr, [0, 0.25, 0.5, 0.5, 0.75, 0.75, 1, 1, 1])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.8, 0.75, 0.7, 0.6, 0.3, 0.2, 0.1])
    assert tpr_at_fpr(HAND_LABELS, HAND_SCORES, 0.2) == 0.5
    assert tpr_at_fpr(HAND_LABELS, HAND_SCORES, 0.25) == 0.75
    assert tpr_at_fpr(HAND_LABELS, HAND_SCORES, 0.5) == 1.0
    assert tpr_at_fpr(HAND_LABELS, HAND_SCORES, 0.0) == 0.5
    # AUC by counting pairs member > non-member: .9 -> 4, .8 -> 4, .7 -> 3, .3 -> 2: 13 of 16.
    assert auc(HAND_LABELS, HAND_SCORES) == 13 / 16


def test_ties_between_members_and_nonmembers_by_hand():
    # Members .7, .5; non-members .5, .2. The tie at .5 is one diagonal step from (0, .5) to
    # (.5, 1), never (0, 1) nor (.5, .5): TPR at FPR 0 is .5 and the tie counts half in the AUC:
    # .7 beats both (2), .5 ties .5 (.5) and beats .2 (1): 3.5 / 4.
    labels, scores = [1, 1, 0, 0], [0.7, 0.5, 0.5, 0.2]
    fpr, tpr, _ = roc_curve(labels, scores)
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 1, 1])
    assert tpr_at_fpr(labels, scores, 0.0) == 0.5
    assert tpr_at_fpr(labels, scores, 0.49) == 0.5
    assert auc(labels, scores) == 0.875


def test_tpr_at_0_1pct_fpr_by_hand():
    # 1000 members, 1000 non-members: FPR <= 0.1% allows exactly one false positive.
    # 10 members score above every non-member, 5 more sit between the top non-member and the
    # second, the other 985 below all non-members. At FPR 0 the TPR is 10/1000; letting in the
    # top non-member (FPR 1/1000) brings in the next 5 members: TPR 15/1000. The next point
    # with FPR 2/1000 is already over the limit. At 1% FPR (10 non-members) the TPR stays 15/1000.
    nonmember_scores = np.arange(1000.0, 0.0, -1.0)  # 1000, 999, ..., 1
    member_scores = np.r_[np.full(10, 2000.0), np.full(5, 999.5), np.full(985, -1.0)]
    labels = np.r_[np.ones(1000, int), np.zeros(1000, int)]
    scores = np.r_[member_scores, nonmember_scores]
    assert tpr_at_fpr(labels, scores, 0.0) == 10 / 1000
    assert tpr_at_fpr(labels, scores, 0.001) == 15 / 1000
    m = attack_metrics(labels, scores)
    assert m.tpr_at_0_1pct_fpr is None  # 1,000 non-members: one false positive, not resolved
    assert m.tpr_at_1pct_fpr == 15 / 1000


def test_attack_metrics_by_hand():
    # Threshold .5: members .9 .8 .7 .3 -> 1 1 1 0 (TPR 3/4); non-members .75 .6 .2 .1 -> 1 1 0 0
    # (FPR 2/4); accuracy (3 + 2) / 8. Best accuracy over thresholds, from the ROC points of
    # test_roc_and_tpr_at_fpr_by_hand: (tp + 4 - fp) / 8 peaks at 6/8, e.g. at threshold .7
    # (3 members in, 1 non-member in) or .8 (2 members in, no non-member).
    m = attack_metrics(HAND_LABELS, HAND_SCORES)
    assert isinstance(m, AttackMetrics)
    assert m.attack_accuracy == 5 / 8
    assert (m.tpr, m.fpr) == (0.75, 0.5)
    assert m.best_accuracy == 6 / 8
    assert m.auc == 13 / 16
    assert (m.n_members, m.n_nonmembers) == (4, 4)
    # A higher threshold: .8 -> members 1 1 0 0, non-members 0 0 0 0: accuracy 6/8.
    assert attack_metrics(HAND_LABELS, HAND_SCORES, threshold=0.8).attack_accuracy == 6 / 8


def test_score_equal_to_threshold_is_a_member():
    m = attack_metrics([1, 0], [0.5, 0.4], threshold=0.5)
    assert (m.attack_accuracy, m.tpr, m.fpr) == (1.0, 1.0, 0.0)


def test_predictions_override_threshold():
    # Cluster assignments: members 1 0 1 1, non-members 0 0 1 0: accuracy 6/8; the ROC still
    # comes from the scores.
    predictions = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    m = attack_metrics(HAND_LABELS, HAND_SCORES, predictions=predictions)
    assert m.attack_accuracy == 6 / 8
    assert (m.tpr, m.fpr) == (0.75, 0.25)
    assert m.auc == 13 / 16


def test_perfect_separation():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(500, int), np.zeros(500, int)]
    scores = np.r_[rng.uniform(0.6, 1.0, 500), rng.uniform(0.0, 0.4, 500)]
    m = attack_metrics(labels, scores)
    assert m.auc == 1.0
    assert m.tpr_at_0_1pct_fpr is None  # 500 non-members resolve 1% FPR, not 0.1%
    assert m.tpr_at_1pct_fpr == 1.0
    assert m.tpr_at_1pct_fpr_ci == (1.0, 1.0) and m.auc_ci == (1.0, 1.0)
    assert m.attack_accuracy == m.best_accuracy == 1.0
    # Inverted scores: the attack is perfectly wrong.
    assert auc(labels, -scores) == 0.0
    assert tpr_at_fpr(labels, -scores, 0.001) == 0.0


def test_as_dict_keys():
    d = attack_metrics(HAND_LABELS, HAND_SCORES).as_dict()
    assert list(d) == [
        "attack_accuracy",
        "auc",
        "tpr",
        "fpr",
        "tpr_at_0.1pct_fpr",
        "tpr_at_1pct_fpr",
        "best_accuracy",
        "n_members",
        "n_nonmembers",
        "min_resolvable_fpr",
        "attack_accuracy_ci",
        "auc_ci",
        "tpr_at_0.1pct_fpr_ci",
        "tpr_at_1pct_fpr_ci",
        "ci_level",
        "bootstrap_resamples",
    ]
    assert d["tpr_at_0.1pct_fpr"] is None and d["tpr_at_0.1pct_fpr_ci"] is None
    assert d["n_members"] == 4 and d["min_resolvable_fpr"] == 5 / 4
    assert len(d["auc_ci"]) == 2 and d["bootstrap_resamples"] == 1000
    json.dumps(d)  # plain numbers and lists: results.json can hold it


def test_per_class_accuracy():
    labels = [1, 1, 0, 0, 1, 0]
    predictions = [1, 0, 0, 1, 1, 0]
    classes = [0, 0, 0, 7, 7, 2]
    # Class 0: right, wrong, right -> 2/3; class 2: right -> 1; class 7: wrong, right -> 1/2.
    assert per_class_accuracy(labels, predictions, classes) == {0: 2 / 3, 2: 1.0, 7: 0.5}


def test_check_balanced():
    check_balanced([1, 0, 0, 1])
    with pytest.raises(ValueError, match="unbalanced"):
        check_balanced([1, 1, 0])
    with pytest.raises(ValueError, match="members and non-members"):
        check_balanced([1, 1])
    with pytest.raises(ValueError, match="members and non-members"):
        check_balanced([])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: roc_curve([1, 0, 1], [0.1, 0.2]), "length"),
        (lambda: auc([1, 0, 2], [0.1, 0.2, 0.3]), "0 \\(non-member\\) or 1"),
        (lambda: auc([1, 0, -1], [0.1, 0.2, 0.3]), "0 \\(non-member\\) or 1"),
        (lambda: auc([1, 0, 0.5], [0.1, 0.2, 0.3]), "0 \\(non-member\\) or 1"),
        (lambda: auc([1, 0, 1], [0.1, np.nan, 0.3]), "NaN"),
        (lambda: attack_metrics([1, 0], [np.nan, 0.3]), "NaN"),
        (lambda: auc([1, 1], [0.1, 0.2]), "both"),
        (lambda: auc([], []), "empty"),
        (lambda: auc([[1, 0]], [[0.1, 0.2]]), "1-d"),
        (lambda: tpr_at_fpr([1, 0], [0.9, 0.1], 1.5), "target_fpr"),
        (lambda: attack_metrics([1, 0], [0.9, 0.1], predictions=[1, 2]), "predictions"),
        (lambda: attack_metrics([1, 0], [0.9, 0.1], predictions=[1, 0, 1]), "length"),
        (lambda: per_class_accuracy([1, 0], [1, 0], [0]), "length"),
        (lambda: per_class_accuracy([1, 0], [1, 3], [0, 1]), "predictions"),
        (lambda: check_balanced([1, 0, 2, 2]), "0 \\(non-member\\) or 1"),
    ],
)
def test_invalid_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- what an evaluation resolves ---------------------------------------------------------------


def balanced_case(n: int, shift: float = 0.8, seed: int = 0):
    """n members scoring N(shift, 1) and n non-members scoring N(0, 1)."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n, int), np.zeros(n, int)]
    return labels, np.r_[rng.normal(shift, 1, n), rng.normal(0, 1, n)]


@pytest.mark.parametrize(
    "n_nonmembers, resolved_0_1pct, resolved_1pct",
    [(100, False, False), (499, False, False), (500, False, True), (1000, False, True),
     (4999, False, True), (5000, True, True)],
)
def test_tpr_at_fpr_is_reported_only_where_five_false_positives_fit(
        n_nonmembers, resolved_0_1pct, resolved_1pct):
    labels, scores = balanced_case(n_nonmembers)
    m = attack_metrics(labels, scores, resamples=50)
    assert m.min_resolvable_fpr == 5 / n_nonmembers
    for got, interval, resolved, f in ((m.tpr_at_0_1pct_fpr, m.tpr_at_0_1pct_fpr_ci,
                                        resolved_0_1pct, 0.001),
                                       (m.tpr_at_1pct_fpr, m.tpr_at_1pct_fpr_ci,
                                        resolved_1pct, 0.01)):
        if resolved:
            assert got == tpr_at_fpr(labels, scores, f)
            assert interval is not None
        else:
            assert got is None and interval is None
    assert resolvable(n_nonmembers, 0.01) == resolved_1pct
    assert resolvable(n_nonmembers, 0.001) == resolved_0_1pct
    assert min_resolvable_fpr(n_nonmembers) <= 0.01 if resolved_1pct else \
        min_resolvable_fpr(n_nonmembers) > 0.01


# --- bootstrap intervals ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_weighted_metrics_equal_the_metrics_of_the_repeated_records(seed):
    # Weights 0, 1, 2 (as a bootstrap resample draws them) must give what the evaluation set with
    # each record repeated that often gives; all ones, the evaluation set itself.
    labels, scores = random_case(seed)
    members = labels == 1
    rng = np.random.default_rng(1000 + seed)
    wm, wn = rng.integers(0, 3, members.sum()), rng.integers(0, 3, (~members).sum())
    wm[0], wn[0] = 1, 1  # some of each
    fprs = [0.0, 0.01, 0.1, 0.3, 1.0]
    for weights_m, weights_n in ((np.ones_like(wm), np.ones_like(wn)), (wm, wn)):
        y = np.r_[np.ones(weights_m.sum(), int), np.zeros(weights_n.sum(), int)]
        s = np.r_[np.repeat(scores[members], weights_m), np.repeat(scores[~members], weights_n)]
        got_auc, got_tpr = weighted_metrics(scores[members], scores[~members], weights_m,
                                            weights_n, fprs)
        assert got_auc[0] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
        for f in fprs:
            assert got_tpr[f][0] == tpr_at_fpr(y, s, f)


def test_interval_contains_the_estimate_and_shrinks_with_n():
    widths = []
    for n in (100, 400, 1600):
        labels, scores = balanced_case(n)
        m = attack_metrics(labels, scores, seed=3)
        for value, (low, high) in ((m.auc, m.auc_ci), (m.attack_accuracy, m.attack_accuracy_ci)):
            assert low <= value <= high
        widths.append(m.auc_ci[1] - m.auc_ci[0])
    # standard errors go as 1 / sqrt(n): four times the targets, about half the width
    assert widths[0] > widths[1] > widths[2]
    assert widths[1] / widths[0] == pytest.approx(0.5, abs=0.15)
    assert widths[2] / widths[1] == pytest.approx(0.5, abs=0.15)


def test_same_seed_same_interval_other_seed_other_interval():
    labels, scores = balanced_case(500)
    a, b = attack_metrics(labels, scores, seed=7), attack_metrics(labels, scores, seed=7)
    c = attack_metrics(labels, scores, seed=8)
    assert a.auc_ci == b.auc_ci and a.tpr_at_1pct_fpr_ci == b.tpr_at_1pct_fpr_ci is not None
    assert a.auc_ci != c.auc_ci
    assert a.auc == c.auc  # the estimate itself does not depend on the seed


def hanley_mcneil_se(auc_value: float, n1: int, n0: int) -> float:
    """The normal-approximation standard error of the AUC (Hanley and McNeil, 1982)."""
    q1, q2 = auc_value / (2 - auc_value), 2 * auc_value ** 2 / (1 + auc_value)
    variance = (auc_value * (1 - auc_value) + (n1 - 1) * (q1 - auc_value ** 2)
                + (n0 - 1) * (q2 - auc_value ** 2)) / (n1 * n0)
    return float(np.sqrt(variance))


@pytest.mark.parametrize("shift", [0.0, 0.5, 1.5])
def test_auc_interval_matches_the_normal_approximation(shift):
    n = 1000
    labels, scores = balanced_case(n, shift=shift, seed=11)
    m = attack_metrics(labels, scores, seed=0)
    se = hanley_mcneil_se(m.auc, n, n)
    assert m.auc_ci[1] - m.auc_ci[0] == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert np.std(m.bootstrap["auc"]) == pytest.approx(se, rel=0.1)


def test_tpr_interval_on_a_hand_made_case():
    # 500 + 500 targets; 50 members score above every non-member, the rest below all of them:
    # TPR at 1% FPR is 0.1 exactly, and a resample's TPR is its share of those 50 members,
    # binomial(500, 0.1) / 500 with standard error sqrt(0.1 * 0.9 / 500) = 0.0134.
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(500, int), np.zeros(500, int)]
    members = np.r_[rng.uniform(2, 3, 50), rng.uniform(-3, -2, 450)]
    scores = np.r_[members, rng.uniform(-1, 1, 500)]
    m = attack_metrics(labels, scores, seed=1)
    assert m.tpr_at_1pct_fpr == 0.1
    low, high = m.tpr_at_1pct_fpr_ci
    assert low < 0.1 < high
    assert np.std(m.bootstrap["tpr_at_1pct_fpr"]) == pytest.approx(np.sqrt(0.09 / 500), rel=0.1)


def test_no_resamples_no_intervals():
    m = attack_metrics(HAND_LABELS, HAND_SCORES, resamples=0)
    assert m.auc_ci is None and m.attack_accuracy_ci is None and m.bootstrap == {}


def test_bootstrap_is_fast():
    labels, scores = balanced_case(1000)  # 2,000 targets
    attack_metrics(labels, scores)  # warm up
    # CPU time of this process, not wall time: other jobs on a shared machine do not count
    started = time.process_time()
    m = attack_metrics(labels, scores)  # 1,000 resamples
    elapsed = time.process_time() - started
    assert m.bootstrap_resamples == 1000 and len(m.bootstrap["auc"]) == 1000
    assert elapsed < 1.0, f"1,000 resamples of 2,000 targets took {elapsed:.2f} s of CPU"
