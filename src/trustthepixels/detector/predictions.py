"""The one predictions format and the one verdict rule.

Every command that scores images (train.py's test split, eval.py, a cross-validation sweep's out-of-fold file,
benchmark.py, predict.py) writes its predictions with `write_predictions`, and compare.py and the sweep summary
read them with `read_predictions`. Columns, after any context columns a command adds in front (`set`, `fold`):

    source, path, label, logit, p_ai, familiarity, verdict, threshold, error

The verdict is `AI`, `Real`, or, with abstention (the default), `uncertain` when the detector cannot tell and
`unfamiliar` when the image is unlike the images it learned from (`familiarity`: the share of calibration images at
least as far from the training images; empty for a checkpoint without a familiarity score).

An image is named by its source (the data folder's name, or the name a union gives it) and its path inside that
folder, so files written by different commands on different machines line up. `logit` and `p_ai` are written at
full precision (`repr`): a confident model's scores must not tie at 1.000000. `label` is empty where it is not
known (predict.py), `verdict` and the scores are empty for a file that could not be read (its `error` says why).

The verdict is "AI" when P(AI) > threshold. By default the threshold is the checkpoint's calibration record's
(metrics/calibration.py: balanced accuracy on its calibration images); `threshold=` overrides it in every command.
`verdict_rule` builds the rule from the record, and says where the number came from.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trustthepixels.data.ingest.fileutils import atomic_write_text
from trustthepixels.detector.settings import THRESHOLD_USE
from trustthepixels.errors import UserError
from trustthepixels.metrics.calibration import Calibration, decide
from trustthepixels.metrics.conformal import ConformalSets
from trustthepixels.metrics.core import sigmoid

log = logging.getLogger(__name__)
COLUMNS = ("source", "path", "label", "logit", "p_ai", "familiarity", "verdict", "threshold", "error")
VERDICTS = {0: "Real", 1: "AI"}
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Threshold:
    """The verdict rule: AI when P(AI) > value, else Real; with abstention (`sets`), that verdict stands only when
    the image's calibrated prediction set holds that one label, and is `uncertain` otherwise (both labels or none
    in the set, or a set that disagrees with the threshold; see metrics/conformal.py). With a familiarity cutoff,
    an image whose familiarity is below it is `unfamiliar`, whatever its P(AI) (model/familiarity.py)."""

    value: float
    origin: str  # in words, for logs, reports and the API
    sets: ConformalSets | None = None
    familiar_min: float | None = None  # familiarity below this: unfamiliar

    @property
    def abstains(self) -> bool:
        """Whether it can withhold a verdict (`uncertain` or `unfamiliar`)."""
        return self.sets is not None or self.familiar_min is not None

    def verdicts(self, p_ai: np.ndarray, familiarity: np.ndarray | None = None) -> np.ndarray:
        return decide(p_ai, self.value, self.sets, familiarity, self.familiar_min)

    def verdict(self, p_ai: float, familiarity: float | None = None) -> str:
        return str(self.verdicts(np.array([p_ai]), None if familiarity is None else np.array([familiarity]))[0])


def verdict_rule(
    calibration: Calibration | None, configured: float | None = None, abstain: bool | Mapping | None = True
) -> Threshold:
    """The rule every command decides by, read from the checkpoint's calibration record: its threshold unless
    `threshold=` is set, and unless `abstain` is false (or `abstain.enabled` is) its prediction sets and familiarity
    cutoff. Nothing is refitted: an `abstain.alpha` or `familiar_quantile` other than the record's is said to need
    calibrate.py, and not used."""
    sets_alone = False
    if isinstance(abstain, Mapping) and calibration is not None:
        _unused_levels(abstain, calibration)
        sets_alone = "familiar_quantile" in abstain and abstain["familiar_quantile"] is None  # no unfamiliar verdicts
        abstain = abstain.get("enabled", True)
    abstain = True if abstain is None else bool(abstain)
    if configured is not None:
        value, origin = float(configured), "threshold= (set by the user)"
        if not 0.0 <= value <= 1.0:
            raise UserError(f"threshold={configured}: use {THRESHOLD_USE}")
    elif calibration is not None:
        value, origin = calibration.threshold, f"{calibration.threshold_rule} on {where_fitted(calibration)}"
    else:
        value, origin = DEFAULT_THRESHOLD, "0.5 (no calibration record)"
    if calibration is None or not abstain:
        return Threshold(value, origin)
    return Threshold(value, origin, calibration.sets, None if sets_alone else calibration.familiar_min)


def _unused_levels(abstain: Mapping, calibration: Calibration) -> None:
    fitted = {"alpha": calibration.sets.alpha, "familiar_quantile": calibration.familiar_quantile}
    for name, value in fitted.items():
        asked = abstain.get(name)
        if asked is not None and value is not None and abs(float(asked) - value) > 1e-12:
            message = "abstain.%s=%g is not used: the calibration record was fitted at %s %g; to change it, run "
            message += "python calibrate.py ckpt_path=... data.root=FOLDER abstain.%s=%g"
            log.warning(message, name, asked, name, value, name, asked)


def where_fitted(calibration: Calibration) -> str:
    """ "the calibration part of cifake (400 AI, 400 Real images, 2026-12-03 14:00 UTC)": for logs, cards, reports."""
    fitted = calibration.fitted_on
    images = fitted.get("images", {})
    counts = ", ".join(f"{images.get(name, 0)} {name}" for name in ("AI", "Real"))
    sources = ", ".join(fitted.get("sources", [])) or "?"
    return f"{fitted.get('part', '?')} of {sources} ({counts} images, {fitted.get('date', '?')})"


@dataclass(frozen=True)
class Prediction:
    source: str
    path: str  # relative to the source's folder ('/' separators)
    logit: float  # NaN when the file could not be scored
    threshold: float
    label: int | None = None  # 1 AI, 0 Real; None where unknown
    error: str = ""
    context: Mapping[str, str] = field(default_factory=dict)  # set=..., fold=...: columns in front
    decided: str = ""  # the verdict the rule in force gave (AI, Real, uncertain, unfamiliar); empty: by threshold
    familiarity: float = math.nan  # NaN: no familiarity score

    @property
    def key(self) -> tuple[str, str]:
        return self.source, self.path

    @property
    def scored(self) -> bool:
        return not math.isnan(self.logit)

    @property
    def p_ai(self) -> float:
        return float(sigmoid(self.logit))

    @property
    def verdict(self) -> str:
        if not self.scored:
            return ""
        return self.decided or VERDICTS[int(self.p_ai > self.threshold)]


def write_predictions(path: Path, predictions: Iterable[Prediction]) -> None:
    """The CSV, written atomically (a reader never sees half a file)."""
    predictions = list(predictions)
    context = list(dict.fromkeys(k for p in predictions for k in p.context))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*context, *COLUMNS])
    for p in predictions:
        familiarity = "" if math.isnan(p.familiarity) else repr(p.familiarity)
        scores = [repr(p.logit), repr(p.p_ai), familiarity, p.verdict] if p.scored else ["", "", "", ""]
        label = "" if p.label is None else int(p.label)
        writer.writerow(
            [*(p.context.get(k, "") for k in context), p.source, p.path, label, *scores, repr(p.threshold), p.error]
        )
    atomic_write_text(Path(path), text.getvalue())


def read_predictions(path: Path) -> list[Prediction]:
    """Every row of a predictions file. Files of other tools need only `path`, `label` and `logit` or `p_ai`."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    if not {"path", "label"} <= set(columns) or not {"logit", "p_ai"} & set(columns):
        raise UserError(f"{path}: not a predictions file (it needs the columns path, label, and logit or p_ai)")
    context = columns[: columns.index("source")] if "source" in columns else []
    return [
        Prediction(
            source=row.get("source") or "",
            path=row["path"],
            logit=_logit(row),
            threshold=float(row.get("threshold") or DEFAULT_THRESHOLD),
            label=int(row["label"]) if row["label"] not in ("", None) else None,
            error=row.get("error") or "",
            context={k: row[k] for k in context},
            decided=row.get("verdict") or "",
            familiarity=float(row["familiarity"]) if row.get("familiarity") else math.nan,
        )
        for row in rows
    ]


def _logit(row: Mapping[str, str]) -> float:
    if row.get("logit"):
        return float(row["logit"])
    if row.get("p_ai"):
        p = min(max(float(row["p_ai"]), 1e-12), 1 - 1e-12)
        return math.log(p / (1 - p))
    return math.nan


def labelled(predictions: Sequence[Prediction]) -> list[Prediction]:
    """The scored predictions with a known label: what metrics are computed from."""
    return [p for p in predictions if p.scored and p.label is not None]
