"""DP-SGD and selective sharing of honest participants (the `privacy:` block)."""

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap

from clients.honest import HonestClient
from fedattack import protocol
from fedattack.config import ConfigError, Experiment, PrivacyConfig, parse_experiment
from fedattack.experiment import check_against_dataset, experiment_dataset
from fedattack.models import build_model
from fedattack.privacy import check_private_model, share_largest, train_private
from strategies.recording import RoundLog
from strategies.server_app import GlobalModelLog

N, FEATURES, CLASSES = 40, 12, 3


class Tensors:
    """A BatchDataset over in-memory tensors."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def batch(self, idx):
        idx = torch.as_tensor(idx, dtype=torch.int64)
        return self.x[idx], self.y[idx]


def one_full_batch_step(noise_multiplier: float, max_grad_norm: float, seed: int = 0):
    """One DP-SGD step of plain SGD (lr 1) with the whole data set in the batch (sample rate 1):
    returns (parameters before, parameters after, data, model)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, CLASSES))
    data = Tensors(torch.randn(N, FEATURES), torch.randint(0, CLASSES, (N,)))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    cfg = PrivacyConfig(noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm)
    done = train_private(model, data, np.arange(N), optimizer, cfg, batch_size=N, epochs=1,
                         device=torch.device("cpu"), generator=torch.Generator().manual_seed(seed),
                         history=[])
    after = {k: v.detach().clone() for k, v in model.named_parameters()}
    return before, after, data, model, done


def per_example_gradients(model, params, data):
    def loss(p, x, y):
        logits = functional_call(model, p, (x.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(logits, y.unsqueeze(0))

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, data.x, data.y)


def test_dp_sgd_update_is_the_mean_of_clipped_per_example_gradients():
    clip = 0.01
    before, after, data, model, done = one_full_batch_step(0.0, clip)
    grads = per_example_gradients(model, before, data)
    norms = torch.cat([g.reshape(N, -1) for g in grads.values()], dim=1).norm(dim=1)
    assert (norms > 10 * clip).all()  # every example is clipped: the test can tell
    scale = (clip / norms).clamp(max=1.0)
    for name, g in grads.items():
        clipped_mean = (g * scale.view(-1, *[1] * (g.dim() - 1))).sum(0) / N
        assert torch.allclose(before[name] - after[name], clipped_mean, atol=1e-7)
    step = torch.cat([(before[k] - after[k]).ravel() for k in before])
    assert step.norm() <= clip * (1 + 1e-5)  # a mean of vectors of norm <= clip
    assert done.epsilon == float("inf")  # no noise: no privacy


def test_dp_sgd_adds_gaussian_noise_of_sigma_times_clip_over_batch():
    sigma, clip = 2.0, 0.01
    before, noiseless, *_ = one_full_batch_step(0.0, clip)
    _, noisy, *_ = one_full_batch_step(sigma, clip)
    _, other, *_ = one_full_batch_step(sigma, clip, seed=1)
    noise = torch.cat([(noiseless[k] - noisy[k]).ravel() for k in before])
    assert noise.numel() > 1000
    assert noise.std().item() == pytest.approx(sigma * clip / N, rel=0.1)
    assert abs(noise.mean().item()) < 0.1 * sigma * clip / N
    assert any(not torch.equal(noisy[k], other[k]) for k in noisy)  # fresh noise per seed


def test_epsilon_grows_with_rounds_and_is_kept_in_the_node_state():
    exp = Experiment(
        name="dp", data={"dataset": "mnist", "train_size": 128, "nonmember_size": 500,
                         "knowledge": {"train_members": 50, "train_nonmembers": 50,
                                       "test_members": 50, "test_nonmembers": 50}},
        model={"arch": "cnn-gan"}, federation={"num_participants": 2, "rounds": 3},
        privacy={"noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-5})
    weights = [v.numpy() for v in build_model("cnn-gan", (1, 28, 28), 10).state_dict().values()]
    client = HonestClient(0)
    spent = []
    for server_round in (1, 2, 3):
        config = {protocol.SERVER_ROUND: server_round, protocol.LR: 1e-3,
                  protocol.EXPERIMENT: exp.model_dump_json()}
        weights, _, metrics = client.fit(weights, config)
        spent.append(metrics["epsilon"])
    assert 0 < spent[0] < spent[1] < spent[2] < float("inf")
    fresh = HonestClient(0).fit(weights, config)[2]["epsilon"]  # no history: one round's worth
    assert fresh == pytest.approx(spent[0])


def test_run_json_round_reports_the_largest_epsilon(tmp_path):
    exp = Experiment(federation={"num_participants": 2, "rounds": 2})
    log = GlobalModelLog(exp, tmp_path, None, None, None)
    log.on_round(1, RoundLog(1, accepted=[0, 1], metrics={0: {"epsilon": 0.5},
                                                          1: {"epsilon": 0.7}}))
    log.on_round(2, RoundLog(2, accepted=[0, 1], metrics={0: {}, 1: {}}))
    assert log.record["rounds"][0]["epsilon"] == 0.7
    assert "epsilon" not in log.record["rounds"][1]


def test_selective_sharing_uploads_only_the_largest_updates():
    rng = np.random.default_rng(0)
    received = [rng.normal(size=(30, 20)).astype(np.float32), rng.normal(size=50).astype(
        np.float32), np.array(7, dtype=np.int64)]
    trained = [r + rng.normal(size=r.shape).astype(np.float32) for r in received[:2]]
    trained.append(np.array(9, dtype=np.int64))
    shared = share_largest(received, trained, 0.1)
    pairs = list(zip(shared[:2], trained[:2], received[:2], strict=True))
    moved = np.concatenate([(s != r).ravel() for s, _, r in pairs])
    assert moved.sum() == round(0.1 * moved.size)
    updates = np.concatenate([np.abs(t - r).ravel() for _, t, r in pairs])
    assert updates[moved].min() >= updates[~moved].max()
    for s, t, r in pairs:
        assert np.array_equal(np.where(s != r, s, t), t)  # moved entries take the trained value
    assert shared[2] == 9
    assert share_largest(received, trained, 1.0) is trained


def test_models_with_batchnorm_are_refused_for_dp_sgd_in_one_line():
    check_private_model(build_model("cnn-gan", (1, 28, 28), 10))
    with pytest.raises(ValueError, match="DP-SGD cannot train model ResNet: BatchNorm") as err:
        check_private_model(build_model("resnet20", (3, 32, 32), 10))
    assert "\n" not in str(err.value)
    exp = Experiment(data={"dataset": "mnist"}, model={"arch": "cnn-gan"}, privacy={})
    check_against_dataset(exp, experiment_dataset(exp))


@pytest.mark.parametrize("block, message", [
    ({"privacy": {"noise_multiplier": -1}}, "privacy.noise_multiplier"),
    ({"privacy": {"share_fraction": 0}}, "privacy.share_fraction"),
    ({"privacy": {"delta": 1}}, "privacy.delta"),
    ({"privacy": {"epsilon": 1}}, "privacy.epsilon: unknown key"),
    ({"privacy": {}, "scenario": "standalone"}, "federated scenario"),
])
def test_bad_privacy_blocks_are_one_line_config_errors(block, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_experiment(block)
    assert "\n" not in str(err.value)
