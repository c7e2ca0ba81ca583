"""What eval.py, compare.py and benchmark.py score: sets of images named as every predictions file names them
(their run's split, or a folder), and `score_set`, which scores a whole set through the Detector."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from trustthepixels.data.ingest.fingerprint import FileRecord
from trustthepixels.data.ingest.roots import parse_roots, source_of
from trustthepixels.data.ingest.scan import Sample, scan_sources
from trustthepixels.data.loading.split import read_split_csv
from trustthepixels.detector.checkpoint import Detector
from trustthepixels.detector.predictions import Prediction, Threshold
from trustthepixels.detector.scoring import Scores
from trustthepixels.errors import UserError
from trustthepixels.evaluation.robustness import Perturbation
from trustthepixels.metrics.core import sigmoid

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """Images to score: each named by its source and its path inside that source's folder (as every
    predictions file names them), with its label and the file to read."""

    name: str
    sources: list[str]
    relpaths: list[str]  # inside each image's source folder
    labels: np.ndarray
    paths: list[Path]
    root: Path  # the folder of its (first) source
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason): unusable files of the scan
    samples: list[Sample] = field(default_factory=list)  # from a scan: its samples and their fingerprints (by relpath)
    records: Mapping[str, FileRecord] = field(default_factory=dict)

    @classmethod
    def from_split(cls, name: str, detector: Detector, rows: list[tuple[str, int]]) -> EvalSet:
        """Part of the training run's own split (its `split.csv`), found in the folders it was trained on."""
        keys = [source_of(detector.data_roots, p) for p, _ in rows]
        return cls(
            name,
            [source for source, _ in keys],
            [relpath for _, relpath in keys],
            np.array([label for _, label in rows]),
            [detector.locate(p) for p, _ in rows],
            detector.first_source_folder,
        )

    @classmethod
    def from_samples(
        cls, name: str, samples: list[Sample], root: Path, records: Mapping[str, FileRecord] | None = None
    ) -> EvalSet:
        return cls(
            name,
            [s.source for s in samples],
            [s.source_relpath for s in samples],
            np.array([s.label for s in samples]),
            [s.path for s in samples],
            root,
            samples=list(samples),
            records=records or {},
        )

    @classmethod
    def from_folder(cls, root: str | Path, min_side: int, cache_dir: str | None, name: str | None = None) -> EvalSet:
        """All of a folder's usable images; the source is named after the folder (or `name`)."""
        (source, folder), *_ = parse_roots(str(root)).items()
        scan = scan_sources({name or source: folder}, min_side=min_side, cache_dir=cache_dir)
        subset = cls.from_samples(name or source, scan.samples, scan.root, scan.records)
        subset.skipped = [(relpath, reason) for relpath, _, reason in scan.skipped]
        return subset

    def predictions(self, scores: Scores, rule: Threshold, **context: str) -> list[Prediction]:
        verdicts = rule.verdicts(sigmoid(scores.logits), scores.familiarity)
        return [
            Prediction(
                source, relpath, float(z), rule.value, int(y), context=context, decided=str(v), familiarity=float(f)
            )
            for source, relpath, z, y, f, v in zip(
                self.sources, self.relpaths, scores.logits, self.labels, scores.familiarity, verdicts, strict=True
            )
        ]


def unique_names(sets: list[EvalSet]) -> None:
    """Name every set uniquely: a folder called `test` given in extra_sets must not overwrite the test split's
    results. A clash takes the parent folder's name (`other/test`), then a number."""
    taken: set[str] = set()
    for subset in sets:
        name = subset.name
        if name in taken:
            name = f"{subset.root.parent.name}/{subset.name}"
        base, n = name, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        subset.name = name
        taken.add(name)


def score_set(
    detector: Detector,
    subset: EvalSet,
    batch_size: int,
    workers: int,
    device: str,
    min_side: int,
    perturb: Perturbation | None = None,
) -> Scores:
    """A whole set of verified images scored (a file that fails now changed since it was scanned: an error)."""
    what = f"{subset.name}" + (f" ({perturb.name})" if perturb else "")
    scores = detector.score_files(subset.paths, batch_size, workers, device, perturb, min_side, f"Scoring {what}")
    if scores.errors:  # files verified at setup cannot fail unless they changed since
        failed = "; ".join(str(e) for e in list(scores.errors.values())[:3])
        raise UserError(f"{len(scores.errors)} file(s) of {what} changed after they were checked: {failed}")
    return scores


def eval_set(cfg: DictConfig, detector: Detector) -> EvalSet:
    """The set to evaluate: `data.root` when given, else the run's test split. A run folder moved or copied without
    its images says in one line what is missing."""
    if cfg.data.root:
        return EvalSet.from_folder(cfg.data.root, min_side(cfg, detector), cfg.data.cache_dir)
    split_csv = detector.run_dir / "split.csv" if detector.run_dir else None
    if split_csv is None or not split_csv.is_file() or not detector.data_roots:
        raise UserError(
            f"No split.csv beside {detector.checkpoint} (expected in <run dir>/split.csv): pass data.root=FOLDER "
            "to evaluate on a folder of AI/ and Real/ images"
        )
    rows = read_split_csv(split_csv)["test"]
    missing = [p for p, _ in rows if not detector.locate(p).is_file()]
    if missing:
        raise UserError(
            f"ckpt_path={cfg.ckpt_path}: {len(missing)} of the {len(rows)} test images its run's split.csv names are "
            f"not where it trained (e.g. {detector.locate(missing[0])}): put them back, or pass data.root=FOLDER to "
            "evaluate on a folder of AI/ and Real/ images"
        )
    return EvalSet.from_split("test", detector, rows)


def min_side(cfg: DictConfig, detector: Detector) -> int:
    """The training run's rule for a usable image, unless data.min_image_side says otherwise."""
    return detector.min_image_side if cfg.data.min_image_side is None else int(cfg.data.min_image_side)
