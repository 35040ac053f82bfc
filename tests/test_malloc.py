"""glibc's mmap threshold is fixed when fedattack is imported (fedattack/_malloc.py)."""

import subprocess
import sys

# Allocates and frees a 20 MiB tensor twice, then a third, and prints by how many MiB the
# resident anonymous memory fell when the third was freed: about 20 when blocks of that size are
# mapped and unmapped; about 0 when glibc's raised threshold served it from the heap.
PROBE = """
import sys
from pathlib import Path
if sys.argv[1] == "import":
    import fedattack
import torch

def anon_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024

for _ in range(2):
    t = torch.ones(5 * 2**20)
    del t
t = torch.ones(5 * 2**20)
before = anon_mib()
del t
print(before - anon_mib())
"""


def released_mib(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True
    )
    return float(out.stdout)


def test_large_blocks_go_back_to_the_system_once_fedattack_is_imported():
    assert released_mib("plain") < 5  # glibc's own behaviour: the freed block stays resident
    assert released_mib("import") > 15
