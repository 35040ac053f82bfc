"""The attack network of Nasr et al. (Fig. 1, Table XIV in Appendix A).

Each feature component of a record is processed by its own sub-network, the sub-networks' 64-d
outputs are concatenated, and a fully connected encoder reduces them to one scalar: the membership
logit in the supervised attack, the membership embedding in the unsupervised one (where a small
decoder reconstructs summary features from that scalar).

Components are recognised by name, following the contract of ``fedattack/features/`` (per-record
shapes, the batch dimension excluded; T is the number of observed model snapshots):

- ``"grad:<layer>"``: (T, rows, cols), the loss gradient of a layer as a matrix (rows = output
  units, cols = inputs [+1 bias column]). Gradient component: a convolution with ``kernels`` kernels
  of size 1 x cols (each kernel spans a whole row, i.e. all weights into one output unit, "to
  capture the correlation of the gradients in each activation function"), stride 1, the T snapshots
  as input channels; ReLU, dropout, flatten, then FC 128, 64.
- everything else (``"act:<layer>"`` (T, d), ``"output"`` (T, C), ``"loss"`` (T, 1), ``"label"``
  (C,)): flattened across the T snapshots (the snapshots stacked, as in Fig. 1), then FC 128, 64.

Encoder: FC 256, 128, 64, 1. Every hidden layer is followed by ReLU and dropout 0.2. The paper
initialises weights N(0, 0.01) and biases 0 (Section III-E): ``init="paper"``. The default is
PyTorch's own initialisation (``init="default"``, uniform with a fan-in scale): with N(0, 0.01)
each of the five to six layers between a feature and the logit shrinks the signal about tenfold
(a layer of n inputs multiplies its scale by about 0.01 * sqrt(n / 2)), so the initial logits are
within 1e-6 of 0 and the attack spends most of its epochs leaving that plateau.

Inputs are standardised per component and coordinate before the sub-networks read them:
:meth:`AttackNetwork.set_standardisation` stores a shift and a scale per coordinate (buffers, so
they travel with the state dict); :class:`~fedattack.attacks.whitebox.WhiteBoxAttack` computes
them on its training records only. Until set, the shift is 0 and the scale 1.

Size: the gradient component of a layer with ``rows`` output units has
``kernels * rows * 128`` weights in its first fully connected layer alone (see
:func:`gradient_component_parameters`): 131M parameters (0.5 GB in float32, three times that with
Adam's state) for rows = 1024 and the paper's 1000 kernels, and its convolution output is
``batch * kernels * rows`` floats (262 MB for a batch of 64). Lower ``kernels`` for big layers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

GRADIENT_PREFIX = "grad:"
COMPONENT_FEATURES = 64  # every component's output width (Table XIV)
ENCODER_SIZES = (256, 128, 64)  # hidden layers of the encoder, before its scalar output
DECODER_HIDDEN = 64
INIT_STD = 0.01
INITS = ("default", "paper")


def is_gradient(name: str) -> bool:
    return name.startswith(GRADIENT_PREFIX)


def gradient_component_parameters(shape: tuple[int, ...], kernels: int) -> int:
    """Parameters of the gradient component for a per-record gradient of shape (T, rows, cols)."""
    snapshots, rows, cols = _gradient_shape(shape)
    conv = kernels * snapshots * cols + kernels
    return conv + _fcn_parameters(kernels * rows)


def _fcn_parameters(in_features: int) -> int:
    return in_features * 128 + 128 + 128 * COMPONENT_FEATURES + COMPONENT_FEATURES


def _gradient_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"a gradient component has per-record shape (T, rows, cols), got {shape}")
    snapshots, rows, cols = (int(n) for n in shape)
    return snapshots, rows, cols


def _hidden_layers(in_features: int, sizes: tuple[int, ...], dropout: float) -> list[nn.Module]:
    """Linear -> ReLU -> Dropout for each size in turn."""
    layers: list[nn.Module] = []
    for size in sizes:
        layers += [nn.Linear(in_features, size), nn.ReLU(), nn.Dropout(dropout)]
        in_features = size
    return layers


def _component(name: str, shape: tuple[int, ...], kernels: int, dropout: float) -> nn.Sequential:
    """The sub-network for one feature component, mapping (B, *shape) to (B, 64)."""
    if is_gradient(name):
        snapshots, rows, cols = _gradient_shape(shape)
        return nn.Sequential(
            nn.Conv2d(snapshots, kernels, kernel_size=(1, cols), stride=1),  # -> (B, K, rows, 1)
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Flatten(),
            *_hidden_layers(kernels * rows, (128, COMPONENT_FEATURES), dropout),
        )
    return nn.Sequential(
        nn.Flatten(), *_hidden_layers(math.prod(shape), (128, COMPONENT_FEATURES), dropout)
    )


class AttackNetwork(nn.Module):
    """Components per feature, a fully connected encoder to one scalar, optionally a decoder.

    ``shapes`` maps component names to per-record shapes; only those components are read from a
    batch (others are ignored), in sorted name order so that the parameter layout does not depend
    on dict order.
    """

    def __init__(
        self,
        shapes: dict[str, tuple[int, ...]],
        kernels: int = 1000,
        dropout: float = 0.2,
        decoder_outputs: int = 0,
        init: str = "default",
    ):
        super().__init__()
        if not shapes:
            raise ValueError("the attack network needs at least one feature component")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; known: {INITS}")
        self.shapes = {name: tuple(int(n) for n in shapes[name]) for name in sorted(shapes)}
        self.names = list(self.shapes)
        self.decoder_outputs = decoder_outputs
        # Indexed rather than keyed by name: layer names contain dots, which modules cannot.
        self.components = nn.ModuleList(
            _component(name, shape, kernels, dropout) for name, shape in self.shapes.items()
        )
        self.encoder = nn.Sequential(
            *_hidden_layers(COMPONENT_FEATURES * len(self.names), ENCODER_SIZES, dropout),
            nn.Linear(ENCODER_SIZES[-1], 1),
        )
        self.decoder = (
            nn.Sequential(
                nn.Linear(1, DECODER_HIDDEN), nn.ReLU(), nn.Linear(DECODER_HIDDEN, decoder_outputs)
            )
            if decoder_outputs > 0
            else None
        )
        if init == "paper":
            self.apply(_init)
        for i, shape in enumerate(self.shapes.values()):
            self.register_buffer(f"shift_{i}", torch.zeros(shape))
            self.register_buffer(f"scale_{i}", torch.ones(shape))

    def set_standardisation(self, stats: dict[str, tuple[Tensor, Tensor]]) -> None:
        """Components read as ``(x - shift) / scale`` from now on; ``stats`` maps each
        component's name to its (shift, scale), each of the component's per-record shape."""
        if set(stats) != set(self.names):
            raise ValueError(f"standardisation for {sorted(stats)}, the network reads {self.names}")
        for i, name in enumerate(self.names):
            shift, scale = (torch.as_tensor(v, dtype=torch.float32) for v in stats[name])
            if tuple(shift.shape) != self.shapes[name] or tuple(scale.shape) != self.shapes[name]:
                raise ValueError(f"component {name!r}: standardisation of shape "
                                 f"{tuple(shift.shape)}, expected {self.shapes[name]}")
            if not torch.all(scale > 0):
                raise ValueError(f"component {name!r}: scales must be positive")
            getattr(self, f"shift_{i}").copy_(shift)
            getattr(self, f"scale_{i}").copy_(scale)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """(B,): the encoder's scalar output, before any sigmoid."""
        parts = [
            component(self._input(batch, name, i))
            for i, (name, component) in enumerate(zip(self.names, self.components, strict=True))
        ]
        return self.encoder(torch.cat(parts, dim=1)).squeeze(1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """(B,): the logit of "member"; its sigmoid is Pr{member}."""
        return self.embed(batch)

    def decode(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, decoder_outputs): the reconstruction from the scalar embedding."""
        if self.decoder is None:
            raise RuntimeError("this network has no decoder (decoder_outputs=0)")
        return self.decoder(self.embed(batch).unsqueeze(1))

    def _input(self, batch: dict[str, Tensor], name: str, i: int) -> Tensor:
        if name not in batch:
            raise KeyError(f"the batch has no component {name!r} (it has {sorted(batch)})")
        x = batch[name]
        if tuple(x.shape[1:]) != self.shapes[name]:
            raise ValueError(
                f"component {name!r}: expected per-record shape {self.shapes[name]}, "
                f"got {tuple(x.shape[1:])}"
            )
        return (x.float() - getattr(self, f"shift_{i}")) / getattr(self, f"scale_{i}")


def _init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        nn.init.zeros_(module.bias)


def attack_network_bytes(shapes: dict[str, tuple[int, ...]], kernels: int,
                         batch_size: int) -> int:
    """Memory the attack network needs to train: weights, their gradients and Adam's two
    moments (4 floats a parameter), plus a batch's convolution outputs (kept for backward)."""
    params, activations = 0, 0
    for name, shape in shapes.items():
        if is_gradient(name):
            params += gradient_component_parameters(shape, kernels)
            activations += 3 * batch_size * kernels * shape[1]
        else:
            params += math.prod(shape) * 128 + 128 + 128 * COMPONENT_FEATURES + COMPONENT_FEATURES
    return 4 * (4 * params + activations)
