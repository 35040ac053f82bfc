"""Model registry: shapes, parameter counts, layer names, no in-place ops, vmap-ability."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedattack.models import Generator, build_model, layer_names, model_names
from fedattack.models.cifar import BasicBlock, Bottleneck

BIG = "densenet-bc-190-40"
IMAGE_MODELS = [
    "alexnet",
    "resnet20",
    "resnet32",
    "resnet110",
    "densenet-bc-100-12",
    "cnn",
    "cnn-gan",
]
FC_MODELS = ["fc", "purchase-fc", "texas-fc"]
SMALL_MODELS = FC_MODELS + IMAGE_MODELS
SHAPES = [(1, 28, 28), (3, 32, 32)]

pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fc_param_count(sizes: list[int]) -> int:
    return sum((a + 1) * b for a, b in pairwise(sizes))




@pytest.fixture(scope="module")
def big_densenet() -> nn.Module:
    torch.manual_seed(0)
    return build_model(BIG, (3, 32, 32), 100).eval()


def test_registry_has_every_architecture():
    assert sorted(model_names()) == sorted(SMALL_MODELS + [BIG])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch", SMALL_MODELS)
def test_output_shape(arch, shape):
    torch.manual_seed(0)
    model = build_model(arch, shape, 10).eval()
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()
    assert model.input_shape == shape and model.num_classes == 10


def test_big_densenet_shape_and_size(big_densenet):
    out = big_densenet(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 100)
    assert abs(n_params(big_densenet) - 25.6e6) / 25.6e6 < 0.05


def test_resnet110_size():
    assert abs(n_params(build_model("resnet110", (3, 32, 32), 100)) - 1.7e6) / 1.7e6 < 0.05


@pytest.mark.parametrize(
    "arch,in_features", [("purchase-fc", 600), ("texas-fc", 6169), ("fc", 784)]
)
def test_fc_exact_parameter_count(arch, in_features):
    model = build_model(arch, (in_features,), 100)
    assert n_params(model) == fc_param_count([in_features, 1024, 512, 256, 128, 100])


def test_purchase_fc_count_is_the_paper_net():
    # 600*1024+1024 + 1024*512+512 + 512*256+256 + 256*128+128 + 128*100+100
    assert n_params(build_model("purchase-fc", (600,), 100)) == 1_317_348


def test_fc_flattens_image_input():
    model = build_model("fc", (1, 28, 28), 10)
    assert model.features[0].in_features == 784


@pytest.mark.parametrize("activation,cls", [("tanh", nn.Tanh), ("relu", nn.ReLU)])
def test_fc_activation(activation, cls):
    model = build_model("fc", (20,), 5, activation=activation)
    acts = [m for m in model.modules() if isinstance(m, (nn.Tanh, nn.ReLU))]
    assert len(acts) == 4 and all(isinstance(m, cls) for m in acts)


def test_cnn_gan_on_att_faces():
    model = build_model("cnn-gan", (1, 112, 92), 40).eval()
    assert model(torch.randn(2, 1, 112, 92)).shape == (2, 40)
    assert model.hidden.in_features == 64 * 16 * 12


def test_cnn_gan_on_mnist_matches_hitaj_layout():
    model = build_model("cnn-gan", (1, 28, 28), 10)
    assert model.hidden.in_features == 64 * 2 * 2 and model.hidden.out_features == 200
    assert any(isinstance(m, nn.Tanh) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_alexnet_matches_bearpaw_layout_on_cifar():
    model = build_model("alexnet", (3, 32, 32), 100)
    assert layer_names(model) == [
        "features.0",
        "features.3",
        "features.6",
        "features.8",
        "features.10",
        "classifier",
    ]
    assert model.classifier.in_features == 256


def test_resnet_block_is_residual():
    # With its second BatchNorm zeroed, an identity-shortcut block must return relu(x).
    block = BasicBlock(16, 16).eval()
    nn.init.zeros_(block.bn2.weight)
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_densenet_bottleneck_concatenates_its_input():
    layer = Bottleneck(24, growth_rate=12).eval()
    x = torch.randn(2, 24, 8, 8)
    out = layer(x)
    assert out.shape == (2, 36, 8, 8)
    torch.testing.assert_close(out[:, :24], x)


@pytest.mark.parametrize(
    "arch,shape", [("alexnet", (600,)), ("cnn", (28, 28)), ("cnn-gan", (1, 10, 10))]
)
def test_bad_input_shape_is_a_value_error(arch, shape):
    with pytest.raises(ValueError):
        build_model(arch, shape, 10)


def test_unknown_arch_and_activation():
    with pytest.raises(ValueError, match="accepted"):
        build_model("vgg16", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="activation"):
        build_model("fc", (10,), 10, activation="sigmoid")


def _assert_no_inplace(model: nn.Module) -> None:
    offenders = [name for name, m in model.named_modules() if getattr(m, "inplace", False)]
    assert offenders == []


@pytest.mark.parametrize("arch", SMALL_MODELS)
def test_no_inplace_modules(arch):
    _assert_no_inplace(build_model(arch, (3, 32, 32), 10))


def test_no_inplace_modules_big(big_densenet):
    _assert_no_inplace(big_densenet)


def test_inplace_check_can_fail():
    with pytest.raises(AssertionError):
        _assert_no_inplace(nn.Sequential(nn.Linear(2, 2), nn.ReLU(inplace=True)))


def _hook_order(model: nn.Module, shape: tuple[int, ...]) -> list[str]:
    """Names of parametrised modules in the order their forward hooks fire."""
    fired: list[str] = []
    handles = [
        m.register_forward_hook(lambda *_, name=name: fired.append(name))
        for name, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False))
        and not isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    with torch.no_grad():
        model.eval()(torch.randn(1, *shape))
    for h in handles:
        h.remove()
    return fired


@pytest.mark.parametrize("arch", SMALL_MODELS)
def test_layer_names_in_forward_order(arch):
    shape = (3, 32, 32)
    model = build_model(arch, shape, 10)
    names = layer_names(model)
    assert names == _hook_order(model, shape)
    modules = dict(model.named_modules())
    for name in names:
        assert isinstance(modules[name], (nn.Linear, nn.Conv2d))
        assert any(True for _ in modules[name].parameters(recurse=False))
    assert isinstance(modules[names[-1]], nn.Linear)


def test_layer_names_big(big_densenet):
    names = layer_names(big_densenet)
    assert names[0] == "conv1" and names[-1] == "fc"
    assert len(names) == 1 + 3 * 31 * 2 + 2 + 1


def test_fc_layer_names():
    assert layer_names(build_model("purchase-fc", (600,), 100)) == [
        "features.0",
        "features.2",
        "features.4",
        "features.6",
        "classifier",
    ]


def _calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of the batch `x`."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly its statistics
    with torch.no_grad():
        model.train()(x)
    for m in norms:
        m.momentum = 0.1


def _check_per_example_gradients(model: nn.Module, shape: tuple[int, ...]) -> None:
    """vmap(grad) over a batch of 2 equals two separate backward passes (first and last layers).

    In float64: in an untrained deep net the first layer's gradient is so ill-conditioned that
    float32 results differ by several percent with the order of summation alone. BatchNorm
    statistics are calibrated on a batch first, as the initial ones (mean 0, variance 1) make
    an untrained deep net's activations blow up in eval mode.
    """
    model.double()
    _calibrate_batchnorm(model, torch.randn(8, *shape, dtype=torch.float64))
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    x = torch.randn(2, *shape, dtype=torch.float64)
    y = torch.tensor([1, 7]) % model.num_classes

    def loss(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0))

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    names = layer_names(model)
    checked = {
        name + ".weight": dict(model.named_parameters())[name + ".weight"]
        for name in (names[0], names[-1])
    }
    try:
        for i in range(2):
            model.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
            for key, p in checked.items():
                assert p.grad.abs().max() > 0
                torch.testing.assert_close(grads[key][i], p.grad, rtol=1e-7, atol=1e-9)
    finally:
        model.zero_grad()
        model.float()


# densenet-bc-190-40 shares DenseNet's code with densenet-bc-100-12 and takes too long here.
@pytest.mark.parametrize("arch", SMALL_MODELS)
def test_per_example_gradients_with_vmap(arch):
    torch.manual_seed(0)
    _check_per_example_gradients(build_model(arch, (1, 28, 28), 10), (1, 28, 28))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 112, 92)])
def test_generator_shape_and_range(shape):
    torch.manual_seed(0)
    gen = Generator(100, shape, low=-0.5, high=2.0)
    out = gen(gen.noise(4))
    assert out.shape == (4, *shape)
    assert out.min() >= -0.5 and out.max() <= 2.0
    assert out.std() > 0
    _assert_no_inplace(gen)


def test_generator_per_channel_range_and_errors():
    gen = Generator(16, (3, 32, 32), low=[0.0, -1.0, -2.0], high=[1.0, 0.0, -1.0]).eval()
    out = gen(gen.noise(8, torch.Generator().manual_seed(0)))
    for c, (lo, hi) in enumerate([(0.0, 1.0), (-1.0, 0.0), (-2.0, -1.0)]):
        assert lo <= out[:, c].min() and out[:, c].max() <= hi
    with pytest.raises(ValueError):
        Generator(16, (3, 32, 32), low=[0.0, 0.0], high=1.0)
    with pytest.raises(ValueError):
        Generator(16, (1, 28, 28), low=1.0, high=0.0)
    with pytest.raises(ValueError):
        Generator(16, (784,))


def test_generator_trains_into_a_classifier():
    torch.manual_seed(0)
    gen = Generator(8, (1, 28, 28))
    clf = build_model("cnn-gan", (1, 28, 28), 10)
    loss = nn.functional.cross_entropy(clf(gen(gen.noise(4))), torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert gen.project.weight.grad is not None and gen.project.weight.grad.abs().sum() > 0
