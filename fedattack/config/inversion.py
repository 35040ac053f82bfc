"""The `inversion:` block: gradient inversion by the aggregator after training (issue 29).

With the block, ``fedattack run`` runs the reconstruction stage (fedattack.inversion.stage) on
the aggregator's recorded view once the target model is trained (after the membership attacks,
where the experiment has them), and its rows join the same results.json and results.md. The
block's keys are those of ``fedattack invert`` and more: the attacks and their parameters, the
victims and rounds, the distractor records identification is measured against, and what the
attacker observes.

``observe: upload`` (the default) inverts each victim's upload against the broadcast before it;
under secure aggregation the aggregator sees no upload, and the round's aggregate is inverted
instead. ``observe: aggregate`` inverts the round's released aggregate in every case: the model
every participant receives next, which under client-level DP carries the DP noise (Flower adds it
to the average; the uploads the aggregator receives before that carry none), so it is what the
noise protects.

Parsing the block imports no torch; the attack names and parameters are checked against the
reconstruction registry when the experiment is validated (fedattack.config.experiment).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fedattack.config.base import NonNegInt, PositiveInt, Strict


class InversionConfig(Strict):
    """Which reconstruction attacks run after training, on whom and when."""

    attacks: list[str] = Field(default_factory=lambda: ["inverting-gradients"], min_length=1,
                               description="reconstruction attacks by name (fedattack list)")
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="attack name -> its parameters (iterations, "
        "restarts, lr, ...); unknown keys and bad values are refused")
    victims: list[NonNegInt] | None = Field(
        default=None, min_length=1, description="participants whose uploads are inverted; "
        "default: every participant")
    rounds: list[PositiveInt] | None = Field(
        default=None, min_length=1, description="recorded rounds to invert; default: the "
        "first recorded round")
    distractors: NonNegInt = Field(
        default=1000, description="records outside the victim's partition that a "
        "reconstruction must be nearer its own record than, to count as identified")
    max_records: PositiveInt = Field(
        default=64, description="refuse an update of more records (the cost grows with them)")
    observe: Literal["upload", "aggregate"] = Field(
        default="upload", description="upload: each victim's upload (the aggregate under "
        "secure aggregation); aggregate: the round's released aggregate, which carries "
        "client-level DP's noise")
