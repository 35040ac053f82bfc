"""Gradient inversion by the aggregator: reconstructing a participant's training records from its
upload and the model broadcast before it.

- `core`: the attack's input (`InversionTarget`) and output (`Reconstruction`), and the matching
  of a re-enacted update against the observed one (`UpdateMatcher`);
- `recipe`: the victim's local training as a differentiable function of the dummy records;
- `labels`: labels from the last layer's update (iDLG's sign rule, counting for batches);
- `dlg`, `idlg`, `inverting`: the attacks, registered by name in `registry`;
- `metrics`: PSNR, SSIM, assignment to the true records, identification, the success rule;
- `stage`: the offline stage reading a run directory's aggregator view.

Nothing here imports Flower, and importing the package imports no torch (the registry is read
when an experiment's inversion block is parsed): the names below load on first use.
"""

__all__ = ["InversionTarget", "LocalRecipe", "Reconstruction", "UpdateMatcher", "pixel_range"]


def __getattr__(name: str):
    if name == "LocalRecipe":
        from fedattack.inversion.recipe import LocalRecipe

        return LocalRecipe
    if name in __all__:
        from fedattack.inversion import core

        return getattr(core, name)
    raise AttributeError(f"module 'fedattack.inversion' has no attribute {name!r}")
