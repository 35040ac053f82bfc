import os
import tempfile
from pathlib import Path

# Datasets built by the tests (synthetic caches, small files) go to a shared temporary folder,
# set before anything reads it, so Ray workers inherit it too.
os.environ.setdefault("FEDATTACK_DATA", str(Path(tempfile.gettempdir()) / "fedattack-test-data"))
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
