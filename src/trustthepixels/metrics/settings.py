"""The `abstain` settings as a structured config: when the detector has no basis for a verdict (the prediction
sets of metrics/conformal.py, the familiarity cutoff of model/familiarity.py). Types checked as the config
composes, the fields' rules by `config.validated`; each refusal names the setting and what it takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from trustthepixels.config import register_schema, setting

DEFAULT_ALPHA = 0.05
DEFAULT_QUANTILE = 0.99
# The pooled blocks the familiarity score reads (model/familiarity.py): the deepest stage's output (before the
# classifier's head), the classifier's own features, or every block. bench/bench_familiarity.py measures them;
# last_stage told other sources apart best.
FAMILIARITY_LAYERS = ("last_stage", "classifier", "all")


@dataclass
class AbstainSettings:
    """configs/abstain/default.yaml says what each setting does; its values are the defaults."""

    enabled: bool = setting("true (uncertain and unfamiliar verdicts) or false (AI or Real for every image)")
    alpha: float = setting("a miss rate between 0 and 1, e.g. 0.05", above=0, below=1)
    familiar_quantile: Optional[float] = setting(
        "the share of validation images to keep (between 0 and 1, e.g. 0.99), or null for the prediction sets alone",
        above=0,
        below=1,
    )
    familiarity_layers: str = setting(
        "last_stage (the deepest stage), classifier (its features) or all (every block)", choices=FAMILIARITY_LAYERS
    )


register_schema("abstain", AbstainSettings)
