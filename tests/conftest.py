import os
import tempfile
from pathlib import Path

# Datasets built by the tests (synthetic caches, small files) go to a shared temporary folder,
# set before anything reads it, so Ray workers inherit it too.
os.environ.setdefault("FEDATTACK_DATA", str(Path(tempfile.gettempdir()) / "fedattack-test-data"))
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: they gain nothing from more, and on a shared
    machine more threads are much slower. Use with `pytestmark = pytest.mark.usefixtures(...)`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
