"""The `abstain` settings, declared once as a structured config: when the detector has no basis for a verdict (the
prediction sets of metrics/conformal.py, the familiarity cutoff of model/familiarity.py). Types checked as the config
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
    """The `abstain` group: when the detector has no basis for a verdict. `uncertain` (metrics/conformal.py): an
    image's calibrated prediction set holds both labels or none. `unfamiliar` (model/familiarity.py): the image is
    further from the training images, in the detector's own features, than nearly every calibration image. alpha and
    familiar_quantile are fitted into the checkpoint's calibration record by train.py (on the run's calibration
    part) and calibrate.py (on a folder of yours); the other commands read them from the record and take only
    `enabled` from here."""

    # false: every image gets AI or Real.
    enabled: bool = setting("true (uncertain and unfamiliar verdicts) or false (AI or Real for every image)", True)
    # The miss rate per class: on images like the calibration images, the true label is in the set at least
    # 1 - alpha of the time (each class on its own).
    alpha: float = setting("a miss rate between 0 and 1, e.g. 0.05", DEFAULT_ALPHA, above=0, below=1)
    # The share of calibration images the familiarity score keeps: an image less familiar than all but
    # 1 - familiar_quantile of them is `unfamiliar`. null: no familiarity score.
    familiar_quantile: Optional[float] = setting(
        "the share of validation images to keep (between 0 and 1, e.g. 0.99), or null for the prediction sets alone",
        DEFAULT_QUANTILE,
        above=0,
        below=1,
    )
    # The feature blocks it reads, fitted at the end of train.py: last_stage (the deepest stage's pooled output,
    # before the classifier's head), classifier (the classifier's own features) or all (every stage and the
    # classifier's, averaged). last_stage told other sources apart best (README, "Knowing when not to answer").
    familiarity_layers: str = setting(
        "last_stage (the deepest stage), classifier (its features) or all (every block)",
        "last_stage",
        choices=FAMILIARITY_LAYERS,
    )


register_schema("abstain", AbstainSettings)
