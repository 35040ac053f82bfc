"""LiRA and RMIA scoring on small frozen cases, checked against values computed by hand."""

import math

import numpy as np
import pytest

from fedattack.attacks.lira import lira_offline, lira_online, logit_confidence
from fedattack.attacks.rmia import marginal, rmia_scores, true_class_probability, tune_a


def minus_log_sf(z: float) -> float:
    """-log Pr[N(0,1) > z], by hand from erfc."""
    return -math.log(0.5 * math.erfc(z / math.sqrt(2)))


def test_logit_confidence_by_hand_and_stable_at_extremes():
    logits = np.array([[2.0, 0.0, 0.0], [1000.0, 0.0, -5.0], [1000.0, 0.0, -5.0]])
    phi = logit_confidence(logits, np.array([0, 0, 1]))
    assert phi[0] == pytest.approx(2 - math.log(2))  # p = e^2/(e^2+2): p/(1-p) = e^2/2
    assert phi[1] == pytest.approx(1000 - math.log(1 + math.exp(-5)))
    assert phi[2] == pytest.approx(-1000.0)
    assert np.isfinite(phi).all()


def test_lira_offline_per_example_and_global_variance():
    target = np.array([2.0, 0.0])
    out = np.array([[0.0, 2.0], [1.0, 5.0]])  # mu 1, sd 1 ; mu 3, sd 2
    per = lira_offline(target, out, variance="per-example")
    assert per == pytest.approx([minus_log_sf(1.0), minus_log_sf(-1.5)])
    sd = math.sqrt((1 + 4) / 2)  # pooled within-record variance
    glob = lira_offline(target, out, variance="global")
    assert glob == pytest.approx([minus_log_sf(1 / sd), minus_log_sf(-3 / sd)])


def test_lira_offline_uses_only_out_entries():
    target = np.array([2.0])
    refs = np.array([[0.0, 2.0, 100.0]])
    mask = np.array([[True, True, False]])
    assert lira_offline(target, refs, "per-example", out_mask=mask) == pytest.approx(
        [minus_log_sf(1.0)])


def test_lira_online_likelihood_ratio_by_hand():
    target = np.array([2.0, 2.0])
    refs = np.array([[3.0, 1.0, 0.0, -2.0], [4.0, 0.0, 3.0, -1.0]])
    inside = np.array([[True, True, False, False]] * 2)
    # row 0: IN N(2, 1), OUT N(-1, 1): 0 - (-9/2) ; row 1: IN N(2, 2), OUT N(1, 2): 0 + 1/8
    assert lira_online(target, refs, inside, "per-example") == pytest.approx([4.5, 0.125])
    # global: both variances pooled to 2.5 -> (t-mu_out)^2 / (2 * 2.5)
    assert lira_online(target, refs, inside, "global") == pytest.approx([9 / 5, 1 / 5])


def test_lira_refuses_too_few_references():
    with pytest.raises(ValueError, match="at least 2 OUT"):
        lira_offline(np.array([0.0]), np.array([[1.0]]), "per-example")
    with pytest.raises(ValueError, match="IN"):
        lira_online(np.array([0.0]), np.array([[1.0, 2.0]]), np.array([[False, False]]))


def test_true_class_probability():
    p = true_class_probability(np.array([[0.0, math.log(3.0)]]), np.array([1]))
    assert p == pytest.approx([0.75])


def test_rmia_offline_by_hand():
    target_x = np.array([0.8, 0.4])
    refs_x = np.array([[0.4, 0.6], [0.4, 0.4]])  # mean OUT 0.5, 0.4
    target_z = np.array([0.5, 0.18, 0.9])
    refs_z = np.array([[0.5, 0.5], [0.4, 0.4], [0.2, 0.2]])  # mean OUT 0.5, 0.4, 0.2
    # a = 0.5: Pr = 0.75 * mean + 0.25 -> x: 0.625, 0.55 ; z: 0.625, 0.55, 0.4
    assert marginal(refs_x, None, 0.5) == pytest.approx([0.625, 0.55])
    # ratio_x = 1.28, 0.7273 ; ratio_z = 0.8, 0.3273, 2.25
    assert rmia_scores(target_x, refs_x, target_z, refs_z, gamma=1.0, a=0.5) == \
        pytest.approx([2 / 3, 1 / 3])
    # gamma 2: x0 beats only z1 (1.28/0.3273 = 3.9), x1 only z1 (2.22)
    assert rmia_scores(target_x, refs_x, target_z, refs_z, gamma=2.0, a=0.5) == \
        pytest.approx([1 / 3, 1 / 3])
    # a = 1: the plain OUT mean; ratio_x = 1.6, 1.0 ; ratio_z = 1.0, 0.45, 4.5
    # gamma 1.5: x0 beats z0 (1.6) and z1 (3.6), x1 only z1 (2.2)
    assert rmia_scores(target_x, refs_x, target_z, refs_z, gamma=1.5, a=1.0) == \
        pytest.approx([2 / 3, 1 / 3])


def test_rmia_offline_ignores_in_entries_and_online_averages_all():
    target_x = np.array([0.8])
    refs = np.array([[0.4, 0.99]])
    inside = np.array([[False, True]])
    assert marginal(refs, inside, 1.0) == pytest.approx([0.4])
    assert marginal(refs, inside, None) == pytest.approx([0.695])
    z = np.array([0.4])
    refs_z = np.array([[0.5, 0.3]])  # online Pr(z) 0.4: ratio_z = 1
    # online: ratio_x = 0.8 / 0.695 = 1.151 > 1.1 * 1 but < 1.2
    assert rmia_scores(target_x, refs, z, refs_z, gamma=1.1, in_x=inside) == [1.0]
    assert rmia_scores(target_x, refs, z, refs_z, gamma=1.2, in_x=inside) == [0.0]


def test_rmia_refuses_bad_parameters():
    with pytest.raises(ValueError, match="gamma"):
        rmia_scores(np.ones(1), np.ones((1, 2)), np.ones(1), np.ones((1, 2)), gamma=0, a=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rmia_scores(np.ones(1), np.ones((1, 2)), np.ones(1), np.ones((1, 2)), a=1.5)


def test_tune_a_picks_the_grid_value_with_the_best_auc():
    rng = np.random.default_rng(0)
    n, k = 400, 6
    inside = np.zeros((n, k), bool)
    for pair in range(k // 2):  # paired complements, as the references are trained
        half = rng.permutation(n)[: n // 2]
        inside[half, 2 * pair] = True
        inside[:, 2 * pair + 1] = ~inside[:, 2 * pair]
    hardness = rng.uniform(0.05, 0.9, n)  # per-record base probability
    refs = np.clip(hardness[:, None] + 0.08 * inside + rng.normal(0, 0.02, (n, k)), 1e-3, 1)
    best, aucs = tune_a(refs, inside, pseudo_target=0, pair=1, gamma=1.0)
    assert set(aucs) == {round(0.1 * i, 1) for i in range(11)}
    assert aucs[best] == max(aucs.values())
    assert aucs[best] > 0.8  # the calibrated ratio finds the members of reference 0
