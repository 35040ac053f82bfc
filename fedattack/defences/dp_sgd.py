"""DP-SGD (Abadi et al. 2016) for the honest participants, through Opacus."""

from fedattack.defences.base import AGGREGATOR, PARTICIPANT, Defence


def _active(exp) -> bool:
    p = getattr(exp, "privacy", None)
    return p is not None and p.noise_multiplier is not None


DEFENCE = Defence(
    name="DP-SGD",
    key="privacy.noise_multiplier",
    what="each honest participant trains with Opacus' DP-SGD (per-record clipping, Gaussian "
         "noise); epsilon accounted over the rounds",
    active=_active,
    label=lambda exp: f"DP-SGD z={exp.privacy.noise_multiplier:g}",
    hides={AGGREGATOR: "any one record's contribution to an upload, to the accountant's epsilon",
           PARTICIPANT: "any one record's contribution to the global models, to the same "
                        "epsilon"},
    client="fedattack.privacy:train_private",
)
