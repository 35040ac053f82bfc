"""fedattack: a federated-learning privacy-attack testbed on Flower."""

from fedattack._malloc import fix_mmap_threshold

__version__ = "0.1.0"

fix_mmap_threshold()
