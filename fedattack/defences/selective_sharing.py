"""Selective sharing, or sparsification (Shokri and Shmatikov 2015): only the largest updates
are uploaded."""

from fedattack.defences.base import AGGREGATOR, PARTICIPANT, Defence


def _active(exp) -> bool:
    p = getattr(exp, "privacy", None)
    return p is not None and p.share_fraction < 1


DEFENCE = Defence(
    name="selective sharing",
    key="privacy.share_fraction",
    what="only that fraction of the largest parameter updates is uploaded (Shokri and "
         "Shmatikov)",
    active=_active,
    label=lambda exp: f"sparsify {exp.privacy.share_fraction * 100:g}%",
    hides={AGGREGATOR: "the smaller parameter updates of each upload (sent back unchanged)",
           PARTICIPANT: "the smaller updates of the others, in the global models"},
    client="fedattack.privacy:share_largest",
)
