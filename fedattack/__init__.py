"""fedattack: a federated-learning privacy-attack testbed on Flower."""

__version__ = "0.1.0"
