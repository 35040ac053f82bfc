"""The federated attacks that read only the attacker's view (FedMIA, Li et al.'s gradient cosine
and difference, the loss series): scores equal hand-computed values on small frozen cases, and
the per-record gradient signals equal those of plain autograd."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedattack.attacks.fedmia import fedmia_scores
from fedattack.attacks.gradcos import cosine_scores, difference_scores
from fedattack.attacks.loss_series import loss_series_scores
from fedattack.attacks.observed import gradient_alignment, per_record_losses, update
from tests.fakes import ArrayDataset, tiny_data

pytestmark = pytest.mark.usefixtures("one_thread")


def _neg_log_sf(z: float) -> float:
    """-log Pr[N(0,1) > z], from erfc (independent of scipy's log_ndtr)."""
    return -math.log(0.5 * math.erfc(z / math.sqrt(2)))


def test_fedmia_frozen_case_global_variance():
    # one round, two records, two other participants
    victim = [[2.0, 0.0]]
    others = [[[0.0, 2.0], [0.0, 0.0]]]
    # record 0: mean 1, variance 1; record 1: mean 0, variance 0 -> pooled sigma = sqrt(0.5)
    sigma = math.sqrt(0.5)
    expected = [_neg_log_sf((2 - 1) / sigma), _neg_log_sf(0.0)]
    np.testing.assert_allclose(fedmia_scores(victim, others), expected, rtol=1e-12)
    assert expected[1] == pytest.approx(math.log(2))


def test_fedmia_sums_rounds_and_per_example_variance():
    victim = np.array([[1.0], [3.0]])  # two rounds, one record
    others = np.array([[[0.0, 2.0]], [[1.0, 3.0]]])  # round means 1 and 2, std 1 and 1
    expected = _neg_log_sf(0.0) + _neg_log_sf(1.0)
    assert fedmia_scores(victim, others, "per-example")[0] == pytest.approx(expected, rel=1e-12)
    # a victim value below the others' scores lower than one above them
    low = fedmia_scores([[-1.0]], [[[0.0, 2.0]]], "per-example")[0]
    assert low == pytest.approx(_neg_log_sf(-2.0)) and low < _neg_log_sf(0.0)
    with pytest.raises(ValueError, match="others must be"):
        fedmia_scores([[1.0, 2.0]], [[[1.0, 2.0]]])


def _cdf(z: float) -> float:
    """Pr[N(0,1) <= z], from erfc (independent of scipy's ndtr)."""
    return 0.5 * math.erfc(-z / math.sqrt(2))


def test_fedmia_authors_combination_is_the_mean_of_the_rounds_cdfs():
    # two rounds, two records, three other participants; each record its own variance
    victim = np.array([[2.0, 0.0], [1.0, 4.0]])
    others = np.array([[[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]],
                       [[1.0, 1.0, 4.0], [2.0, 3.0, 4.0]]])
    # round 1: record 0 mean 1, var 2/3; record 1 mean 1, var 2
    # round 2: record 0 mean 2, var 2;   record 1 mean 3, var 2/3
    z = [[(2 - 1) / math.sqrt(2 / 3), (0 - 1) / math.sqrt(2)],
         [(1 - 2) / math.sqrt(2), (4 - 3) / math.sqrt(2 / 3)]]
    expected = [(_cdf(z[0][0]) + _cdf(z[1][0])) / 2, (_cdf(z[0][1]) + _cdf(z[1][1])) / 2]
    got = fedmia_scores(victim, others, "per-example", combine="mean-cdf")
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # the default on the same case: the rounds' -log p-values summed, p = 1 - CDF
    log_form = [_neg_log_sf(z[0][i]) + _neg_log_sf(z[1][i]) for i in range(2)]
    np.testing.assert_allclose(fedmia_scores(victim, others, "per-example"), log_form,
                               rtol=1e-12)


def test_fedmia_mean_cdf_saturates_where_the_log_form_resolves():
    # three members 10, 20 and 40 standard deviations above their references: the CDF is 1.0
    # for all three (a tie), the log p-values keep them apart and in order
    victim = [[10.0, 20.0, 40.0]]
    others = [[[-1.0, 1.0]] * 3]
    cdf = fedmia_scores(victim, others, "per-example", combine="mean-cdf")
    assert cdf.tolist() == [1.0, 1.0, 1.0]
    log_form = fedmia_scores(victim, others, "per-example")
    assert np.all(np.isfinite(log_form)) and log_form[0] < log_form[1] < log_form[2]
    assert log_form[0] == pytest.approx(_neg_log_sf(10.0), rel=1e-9)
    with pytest.raises(ValueError, match="unknown FedMIA combination"):
        fedmia_scores(victim, others, combine="max")


def test_fedmia_params_offer_both_combinations_log_form_by_default():
    from fedattack.attacks.fedmia import FedMIAParams

    assert FedMIAParams().combine == "log-p-values" and FedMIAParams().variance == "global"
    authors = FedMIAParams(combine="mean-cdf", variance="per-example")
    assert (authors.combine, authors.variance) == ("mean-cdf", "per-example")
    with pytest.raises(ValueError):
        FedMIAParams(combine="median")


def test_cosine_and_difference_frozen_case():
    # round 1: u = (1, 0), g = (3, 4): g.u = 3, |g| = 5, |u - g| = |(-2, -4)| = sqrt(20)
    # round 2: u = (0, 2), g = (2, 0): orthogonal, |u - g| = sqrt(8)
    dots, g2, unorm = [[3.0], [0.0]], [[25.0], [4.0]], [1.0, 2.0]
    assert cosine_scores(dots, g2, unorm)[0] == pytest.approx((0.6 + 0.0) / 2)
    assert difference_scores(dots, g2, unorm)[0] == pytest.approx(
        ((1 - math.sqrt(20)) + (2 - math.sqrt(8))) / 2)
    # a record whose gradient is the update itself: cosine 1, difference |u|
    assert cosine_scores([[4.0]], [[4.0]], [2.0])[0] == pytest.approx(1.0)
    assert difference_scores([[4.0]], [[4.0]], [2.0])[0] == pytest.approx(2.0)
    # a zero gradient has no direction: cosine 0, difference 0
    assert cosine_scores([[0.0]], [[0.0]], [1.0])[0] == 0.0
    assert difference_scores([[0.0]], [[0.0]], [1.0])[0] == 0.0


def test_loss_series_frozen_case():
    losses = [[1.0, 2.0, 0.3], [0.5, 2.0, 0.6]]
    np.testing.assert_allclose(loss_series_scores(losses, [10, 20]), [-0.75, -2.0, -0.45])
    # slopes: -0.05, 0, +0.03 per round; the score is minus the slope
    np.testing.assert_allclose(loss_series_scores(losses, [10, 20], "slope"),
                               [0.05, 0.0, -0.03], atol=1e-15)
    three = loss_series_scores([[3.0], [2.0], [0.0]], [1, 2, 3], "slope")  # slope -1.5
    assert three[0] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="two distinct rounds"):
        loss_series_scores([[1.0]], [5], "slope")


def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    x = torch.randn(7, 4).numpy()
    y = np.array([0, 1, 1, 0, 1, 0, 0])
    return model, ArrayDataset(x, y)


def test_gradient_alignment_equals_autograd_per_record():
    model, data = _tiny()
    p = sum(v.numel() for v in model.parameters())
    updates = torch.randn(2, p, dtype=torch.float64)
    idx = np.array([6, 0, 3, 2, 5])
    dots, norms = gradient_alignment(model, data, idx, updates, torch.device("cpu"))
    for col, i in enumerate(idx):
        model.zero_grad()
        x, y = data.batch(np.array([i]))
        nn.functional.cross_entropy(model(x), y).backward()
        g = torch.cat([q.grad.reshape(-1) for q in model.parameters()]).double()
        np.testing.assert_allclose(dots[:, col], (updates @ g).numpy(), rtol=1e-5, atol=1e-7)
        assert norms[col] == pytest.approx(float(g @ g), rel=1e-5)
    losses = per_record_losses([model], data, idx, torch.device("cpu"))
    x, y = data.batch(idx)
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(x).double(), y, reduction="none")
    np.testing.assert_allclose(losses[0], expected.numpy(), rtol=1e-12)


def test_update_is_before_minus_after():
    before, _ = _tiny()
    after, _ = _tiny()
    with torch.no_grad():
        after[0].bias += 0.5
    u = update(before, after)
    assert u.dtype == torch.float64 and u.numel() == 4 * 3 + 3 + 3 * 2 + 2
    np.testing.assert_allclose(u[12:15].numpy(), [-0.5] * 3, rtol=1e-6)
    assert float(u.abs().sum()) == pytest.approx(1.5, rel=1e-6)


# --- end to end: a real Flower simulation, the global passive attacker ---------------------------

CAMPAIGN = {
    "campaign": "federated-attacks",
    "base": {
        "seed": 3,
        "data": tiny_data(300, 60, 100, num_records=3000, nonmember=800),
        "federation": {"num_participants": 3, "rounds": 3, "record_rounds": [2, 3]},
        "attacker": {"kind": "global", "mode": "passive", "targets": [0, 1]},
        "attack": {"attacks": ["fedmia", "gradcos", "graddiff", "loss-series",
                               "threshold-loss"],
                   "fedmia": {"statistic": "loss"}, "loss-series": {"statistic": "mean"}},
    },
    "experiments": [{"name": "global-passive"}],
}


@pytest.mark.slow
def test_global_passive_attacker_runs_the_federated_attacks(tmp_path):
    import yaml

    from fedattack.campaign import load_campaign, run_campaign

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CAMPAIGN))
    records = run_campaign(load_campaign(path), tmp_path / "out", show_progress=False)
    rows = {(r["victim"], r["attack"]): r for r in records}
    for victim in ("participant-0", "participant-1", "mean of 2"):
        for attack in ("fedmia", "gradcos", "graddiff", "loss-series"):
            r = rows[(victim, attack)]
            assert r["knowledge"] == "observed" and r["attacker"] == "global"
            assert r["snapshots"] == "round-2,round-3"
            assert math.isfinite(r["auc"]) and 0 <= r["auc"] <= 1
            low, high = r["auc_ci"]
            assert low <= r["auc"] <= high
            # 100 non-members resolve 5% and up only: TPR at 1% FPR is null, not 0
            assert r["tpr_at_1pct_fpr"] is None
    # an overfitting 300-record federation leaks: each attack beats a coin on the mean victim
    for attack in ("fedmia", "gradcos", "loss-series"):
        assert rows[("mean of 2", attack)]["auc"] > 0.55, attack


# --- auditing DP ------------------------------------------------------------------------------


def test_clopper_pearson_closed_forms():
    from fedattack.audit import clopper_pearson_lower, clopper_pearson_upper

    # 0 of n: upper bound 1 - alpha^(1/n); n of n: lower bound alpha^(1/n)
    assert clopper_pearson_upper(0, 100) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-10)
    assert clopper_pearson_lower(100, 100) == pytest.approx(0.05 ** (1 / 100), rel=1e-10)
    assert clopper_pearson_lower(0, 10) == 0.0 and clopper_pearson_upper(10, 10) == 1.0
    # 1 of 2, upper: the p with Pr[X <= 1 | p] = 1 - p^2 = 0.05
    assert clopper_pearson_upper(1, 2) == pytest.approx(math.sqrt(0.95), rel=1e-10)


def test_epsilon_lower_bound_hand_computed():
    from fedattack.audit import epsilon_lower_bound

    labels = np.r_[np.ones(100), np.zeros(100)]
    perfect = np.r_[np.linspace(2, 3, 100), np.linspace(0, 1, 100)]
    # 95% for the two rates' bounds together: each one-sided at 97.5%. The TPR lower bound at
    # TPR 1 is a = 0.025^(1/100); the FPR upper bound at FPR 0 is 1 - a
    a = 0.025 ** (1 / 100)
    got = epsilon_lower_bound(labels, perfect, delta=0.0)
    assert got["epsilon_lower_bound"] == pytest.approx(math.log(a / (1 - a)), rel=1e-9)
    assert got["tpr_lower"] == pytest.approx(a) and got["fpr_upper"] == pytest.approx(1 - a)
    assert got["threshold"] == pytest.approx(2.0)
    with_delta = epsilon_lower_bound(labels, perfect, delta=0.01)["epsilon_lower_bound"]
    assert with_delta == pytest.approx(math.log((a - 0.01) / (1 - a)), rel=1e-9)
    # one tied score: the only test says "member" to all (TPR = FPR = 1) or to none: no bound
    assert epsilon_lower_bound(labels, np.zeros(200), 1e-5)["epsilon_lower_bound"] == 0.0
    # the reversed test (flagging non-members) is bounded through the second inequality
    flipped = epsilon_lower_bound(labels, -perfect, delta=0.0)
    assert flipped["epsilon_lower_bound"] == pytest.approx(0.0)


def test_epsilon_lower_bound_half_right():
    from fedattack.audit import clopper_pearson_lower, clopper_pearson_upper, epsilon_lower_bound

    # 100 + 100 targets; the first threshold catches 50 members and no non-member
    labels = np.r_[np.ones(100), np.zeros(100)]
    scores = np.r_[np.full(50, 9.0), np.ones(50), np.ones(100)]
    low, high = clopper_pearson_lower(50, 100, 0.975), clopper_pearson_upper(0, 100, 0.975)
    expected = math.log(low / high)  # > the backward bound log((1 - high) / (1 - low))
    assert expected > math.log((1 - high) / (1 - low))
    assert epsilon_lower_bound(labels, scores, 0.0)["epsilon_lower_bound"] == pytest.approx(
        expected, rel=1e-9)
    # with 10 + 10 targets the same rates bound nothing at 95%
    small = epsilon_lower_bound(np.r_[np.ones(10), np.zeros(10)],
                                np.r_[np.full(5, 9.0), np.ones(15)], 0.0)
    assert small["epsilon_lower_bound"] == 0.0


def test_the_audit_chooses_its_threshold_on_one_half_and_bounds_on_the_other():
    from fedattack.audit import audit_targets, clopper_pearson_lower, clopper_pearson_upper
    from fedattack.metrics import target_halves

    labels = np.r_[np.ones(100, int), np.zeros(100, int)]
    scores = np.r_[np.linspace(2, 3, 100), np.linspace(0, 1, 100)]
    halves = target_halves(labels, 7)
    bound, found = audit_targets(labels, scores, halves, delta=0.0)
    select_members = scores[halves.select][labels[halves.select] == 1]
    assert found.threshold == select_members.min()  # the selection half's best test
    report = halves.report
    tp = int(((scores[report] >= found.threshold) & (labels[report] == 1)).sum())
    assert tp < 50  # the report half's members below the threshold are missed
    low, high = clopper_pearson_lower(tp, 50, 0.975), clopper_pearson_upper(0, 50, 0.975)
    assert bound == pytest.approx(math.log(low / high), rel=1e-9)
    assert (found.tpr_lower, found.fpr_upper) == (pytest.approx(low), pytest.approx(high))
    assert (found.n_members, found.n_nonmembers, found.confidence) == (50, 50, 0.95)
    assert found.selection_bound > bound > 0


def test_the_audit_bound_is_zero_without_signal_in_at_least_95_percent_of_seeds():
    from fedattack.audit import audit_targets, epsilon_lower_bound
    from fedattack.metrics import target_halves

    labels = np.r_[np.ones(500, int), np.zeros(500, int)]
    valid = same_targets = 0
    for seed in range(200):
        scores = np.random.default_rng(seed).normal(size=1000)  # members as non-members
        valid += audit_targets(labels, scores, target_halves(labels, seed), 1e-5)[0] > 0
        # the maximum over thresholds on the very targets bounded, each rate at 95%, as the
        # audit was computed before: a positive "bound" in far more than 5% of seeds
        same_targets += epsilon_lower_bound(labels, scores, 1e-5,
                                            confidence=0.90)["epsilon_lower_bound"] > 0
    assert valid <= 10
    assert same_targets > 10


def test_audit_fields_strongest_and_report(tmp_path):
    from types import SimpleNamespace

    from fedattack import audit, reporting
    from fedattack.io import read_json
    from fedattack.metrics import target_halves
    from tests.fakes import result_row

    labels = np.r_[np.ones(100), np.zeros(100)].astype(int)
    perfect = np.r_[np.linspace(2, 3, 100), np.linspace(0, 1, 100)]
    halves = target_halves(labels, 0)
    plain = SimpleNamespace(privacy=None)
    dp = SimpleNamespace(privacy=SimpleNamespace(noise_multiplier=1.0, delta=1e-5))
    assert audit.audit_fields(plain, labels, perfect, halves) == {}
    strong = audit.audit_fields(dp, labels, perfect, halves)
    weak = audit.audit_fields(dp, labels, np.zeros(200), halves)
    assert strong["epsilon_lower_bound"] > 2 and weak["epsilon_lower_bound"] == 0.0
    rows = audit.mark_strongest([result_row(attack="a", epsilon=8.0, **weak),
                                 result_row(attack="b", epsilon=8.0, **strong)])
    assert "audit_strongest" not in rows[0] and rows[1]["audit_strongest"]
    # the audited attack is the one with the largest bound on the selection half, whatever
    # the bounds on the report half say
    lucky = {**weak, "epsilon_lower_bound": 9.0}
    chosen = audit.mark_strongest([result_row(attack="a", epsilon=8.0, **lucky),
                                   result_row(attack="b", epsilon=8.0, **strong)])
    assert [r.get("audit_strongest") for r in chosen] == [None, True]
    reporting.write_results(tmp_path, rows)
    md = (tmp_path / "results.md").read_text()
    assert "epsilon lower bound (audit)" in md and "| 8.00 |" in md
    assert f"implies epsilon >= {strong['epsilon_lower_bound']:.2f} on the other half" in md
    assert "95% for both together" in md
    assert read_json(tmp_path / "results.json")[1]["epsilon_lower_bound"] == pytest.approx(
        strong["epsilon_lower_bound"], rel=1e-5)
    # a run without DP keeps its table as it was
    reporting.write_results(tmp_path, [result_row()])
    assert "audit" not in (tmp_path / "results.md").read_text()
