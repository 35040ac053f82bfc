"""Gradient inversion by the aggregator: reconstructing a participant's training records from its
upload and the model broadcast before it.

- `core`: the attack's input (`InversionTarget`) and output (`Reconstruction`), and the matching
  of a re-enacted update against the observed one (`UpdateMatcher`);
- `recipe`: the victim's local training as a differentiable function of the dummy records;
- `labels`: labels from the last layer's update (iDLG's sign rule, counting for batches);
- `dlg`, `idlg`, `inverting`: the attacks, registered by name in `registry`;
- `metrics`: PSNR, SSIM, assignment to the true records, identification, the success rule;
- `stage`: the offline stage reading a run directory's aggregator view.

Nothing here imports Flower.
"""

from fedattack.inversion.core import InversionTarget, Reconstruction, UpdateMatcher, pixel_range
from fedattack.inversion.recipe import LocalRecipe

__all__ = ["InversionTarget", "LocalRecipe", "Reconstruction", "UpdateMatcher", "pixel_range"]
