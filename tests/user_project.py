"""A user's own project, written by a test into a folder of its own: a package with a model class,
a data loader and an attack module, a CSV file and an image folder, as a researcher auditing
their federation would bring them (issue 26). Nothing here is importable until the experiment's
``python_path`` names the folder."""

from __future__ import annotations

import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODELS = '''
import torch
from torch import nn


class TabularNet(nn.Module):
    """Linear -> Conv1d over the hidden units (no outer-product rule: torch.func) -> Linear."""

    def __init__(self, input_shape, num_classes, hidden=16):
        super().__init__()
        self.embed = nn.Linear(input_shape[0], hidden)
        self.mix = nn.Conv1d(1, 2, kernel_size=3, padding=1)
        self.head = nn.Linear(2 * hidden, num_classes)

    def forward(self, x):
        h = torch.tanh(self.embed(x)).unsqueeze(1)
        return self.head(torch.tanh(self.mix(h)).flatten(1))


def image_net(num_classes, width=4):
    """A function, not a class; it does not ask for the input shape (the images are 8x8)."""
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(width * 16, num_classes))


def not_a_model(input_shape, num_classes):
    return {"layers": 3}


def wrong_input(num_classes):
    return nn.Linear(5, num_classes)
'''

DATA = '''
import numpy as np
import torch


def load():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    return rng.normal(size=(120, 6)).astype("float32") + y[:, None], y


def mismatched():
    x, y = load()
    return x, y[:-1]


class Pairs(torch.utils.data.Dataset):
    def __init__(self):
        self.x, self.y = load()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i]), int(self.y[i])


def torch_dataset():
    return Pairs()
'''

ATTACKS = '''
from fedattack.attack_registry import AttackOutcome, register


@register("{name}", knowledge="unsupervised",
          description="a user's attack: minus the loss of each target (higher = member)")
def run(ctx) -> AttackOutcome:
    return AttackOutcome("{name}", "loss", ctx.loss_scores(ctx.knowledge.targets))
'''

CLASSES = ("benign", "malignant", "unknown")


@dataclass(frozen=True)
class UserProject:
    """Where the test wrote the user's project, and the names to reference it by."""

    root: Path
    package: str
    attack: str

    @property
    def csv(self) -> Path:
        return self.root / "records.csv"

    @property
    def images(self) -> Path:
        return self.root / "images"

    def ref(self, module: str, name: str) -> str:
        return f"{self.package}.{module}:{name}"

    def forget(self) -> None:
        """Unregister the project's attack and drop its modules (tests share one process)."""
        from fedattack import attack_registry

        attack_registry.unregister(self.attack)
        for module in [m for m in sys.modules if m.split(".")[0] == self.package]:
            del sys.modules[module]


def write_project(root: Path, records: int = 120, seed: int = 0) -> UserProject:
    """The package (a fresh name, so tests in one process never share its modules), a CSV of
    `records` records (6 numeric features that depend on the label, 3 named classes) and an
    image folder of 3 classes of 8x8 grey PNGs."""
    package = f"userpkg_{uuid.uuid4().hex[:8]}"
    project = UserProject(root, package, package.replace("_", "-"))
    code = root / package
    code.mkdir(parents=True)
    (code / "__init__.py").write_text("")
    (code / "models.py").write_text(textwrap.dedent(MODELS))
    (code / "data.py").write_text(textwrap.dedent(DATA))
    (code / "attacks.py").write_text(textwrap.dedent(ATTACKS).format(name=project.attack))
    write_csv(project.csv, records, seed)
    write_images(project.images, records // len(CLASSES), seed)
    return project


def write_csv(path: Path, records: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), records)
    x = rng.normal(size=(records, 6)) + 1.5 * labels[:, None]
    lines = ["f0,f1,f2,diagnosis,f3,f4,f5"]
    for row, label in zip(x, labels, strict=True):
        cells = [f"{v:.4f}" for v in row]
        lines.append(",".join(cells[:3] + [CLASSES[label]] + cells[3:]))
    path.write_text("\n".join(lines) + "\n")


def write_images(folder: Path, per_class: int, seed: int = 0, classes=CLASSES) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (8, 8)) + 60 * c
            Image.fromarray(pixels.astype(np.uint8), mode="L").save(folder / name / f"{i}.png")


def project_for_test(tmp_path: Path, monkeypatch):
    """A test's project in tmp_path/project (the body of the tests' `project` fixture): sys.path
    as it was and the project's modules and attack forgotten after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    written = write_project(tmp_path / "project")
    yield written
    written.forget()
