"""An attack plug-in outside the fedattack package, as a user would write one: importing this
module registers the attack "toy" (-strength * loss of each target). The tests load it through
``python_path`` + ``attack.plugins`` and through an entry point (tests/test_registry.py)."""

from pydantic import BaseModel, Field

from fedattack.attack_registry import AttackOutcome, register


class ToyParams(BaseModel):
    model_config = {"extra": "forbid"}
    strength: float = Field(default=1.0, gt=0)


@register("toy", knowledge="supervised", params=ToyParams,
          description="a test's attack: the loss threshold's scores, scaled")
def run_toy(ctx) -> AttackOutcome:
    strength = ctx.cfg.params("toy").strength
    return AttackOutcome("toy", "loss", strength * ctx.loss_scores(ctx.knowledge.targets))
