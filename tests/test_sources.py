"""Several sources in one run: `data.root` as a mapping or a list, split per source, metrics per source."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from trustthepixels.data.ingest.roots import parse_roots
from trustthepixels.data.ingest.scan import scan_dataset, scan_sources
from trustthepixels.data.loading.datamodule import ImageFolderDataModule
from trustthepixels.data.loading.split import stratified_split
from trustthepixels.errors import ConfigError
from trustthepixels.evaluation.evaluate import evaluate
from trustthepixels.training import train

from .conftest import TINY, compose_cfg, make_image, write_image_folder

CONFIG = {"input_size": (3, 32, 32), "interpolation": "bilinear", "crop_pct": 1.0, "mean": (0.5,) * 3}
CONFIG["std"] = (0.5,) * 3


def test_roots_from_a_folder_a_list_or_a_mapping(tmp_path):
    assert parse_roots(str(tmp_path / "a")) == {"a": tmp_path / "a"}
    assert list(parse_roots([str(tmp_path / "a"), str(tmp_path / "b")])) == ["a", "b"]
    assert parse_roots({"x": str(tmp_path / "a")}) == {"x": tmp_path / "a"}
    with pytest.raises(ConfigError, match="two folders named 'a'"):
        parse_roots([str(tmp_path / "a"), str(tmp_path / "other" / "a")])
    with pytest.raises(ConfigError, match=r"data\.root"):
        parse_roots(3)


def test_a_union_is_split_per_source_exactly_as_each_source_alone(tmp_path):
    roots = {"big": write_image_folder(tmp_path / "big", per_class=30), "small": write_image_folder(tmp_path / "s")}
    union = scan_sources(roots)
    assert {s.relpath.split("/")[0] for s in union.samples} == {"big", "small"}
    parts = stratified_split(union.samples, (0.6, 0.2, 0.2), seed=3)
    counts = Counter((s.source, s.label, name) for name, part in parts.items() for s in part)
    assert counts[("big", 1, "test")] == 6 and counts[("small", 0, "test")] == 2  # each source cut on its own
    # The test split of a source in the union is the test split of that source alone (same seed).
    for name, folder in roots.items():
        alone = stratified_split(scan_sources({name: folder}).samples, (0.6, 0.2, 0.2), seed=3)
        assert {s.relpath for s in alone["test"]} == {
            s.relpath.removeprefix(f"{name}/") for s in parts["test"] if s.source == name
        }
    # A single folder keeps its plain relative paths.
    assert [s.relpath for s in scan_sources({"big": roots["big"]}).samples] == [
        s.relpath for s in scan_dataset(roots["big"]).samples
    ]


@pytest.mark.slow
def test_training_on_two_sources_reports_each(tmp_path):
    a, b = write_image_folder(tmp_path / "a", per_class=16), write_image_folder(tmp_path / "b", per_class=10)
    cfg = compose_cfg(["debug=limit", f"data.root={{alpha: {a}, beta: {b}}}", *TINY, "trainer.max_epochs=1"], tmp_path)
    metrics = train(cfg)
    for stage in ("val", "test"):
        for source in ("alpha", "beta"):
            assert f"{stage}/auroc/{source}" in metrics and f"{stage}/auroc/{source}_lo" in metrics
    run = tmp_path / "run"
    report = json.loads((run / "metrics.json").read_text())
    assert report["data"]["root"] == {"alpha": str(a.resolve()), "beta": str(b.resolve())}
    per_source = report["data"]["images_per_source"]["test"]
    assert set(per_source) == {"alpha", "beta"} and sum(per_source.values()) == report["data"]["images"]["test"]
    with open(run / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert Counter(r["source"] for r in rows) == per_source
    assert all((Path({"alpha": a, "beta": b}[r["source"]]) / r["path"]).is_file() for r in rows)  # inside its source
    # eval.py finds the union's test split from the checkpoint alone and agrees with training.
    (best,) = (run / "checkpoints").glob("epoch*.ckpt")
    result = evaluate(compose_cfg([f"ckpt_path={best}"], tmp_path / "eval", config_name="eval"))
    assert result["sets"]["test"]["auroc"] == pytest.approx(metrics["test/auroc"], abs=1e-6)


def test_datamodule_names_the_missing_source(tmp_path):
    a = write_image_folder(tmp_path / "a")
    module = ImageFolderDataModule({"a": str(a), "gone": str(tmp_path / "gone")}, CONFIG, num_workers=0, cache=False)
    module.prepare_data()
    with pytest.raises(FileNotFoundError, match="gone"):
        module.setup("fit")


def test_training_cap_per_source_and_class_leaves_val_and_test_alone(tmp_path):
    roots = {
        "big": str(write_image_folder(tmp_path / "big", per_class=30)),
        "s": str(write_image_folder(tmp_path / "s")),
    }
    full = ImageFolderDataModule(roots, CONFIG, num_workers=0, cache=False, near_duplicates=None).split()
    capped = ImageFolderDataModule(
        roots, CONFIG, num_workers=0, cache=False, near_duplicates=None, max_train_per_class=5
    ).split()
    assert Counter(stratum_of(s) for s in capped["train"]) == {("big", 0): 5, ("big", 1): 5, ("s", 0): 5, ("s", 1): 5}
    assert {s.relpath for s in capped["train"]} < {s.relpath for s in full["train"]}
    assert capped["val"] == full["val"] and capped["test"] == full["test"]
    with pytest.raises(ConfigError, match="max_train_per_class"):
        ImageFolderDataModule(roots, CONFIG, max_train_per_class=0)


def stratum_of(sample):
    return sample.source, sample.label


def test_a_near_duplicate_across_sources_never_moves_a_sources_images(tmp_path):
    """The same picture in two sources is reported as leakage between them; each source keeps the split it gets
    alone (the benchmark's columns must be the same images whatever the row trains on)."""
    import shutil

    a, b = write_image_folder(tmp_path / "a", per_class=20), tmp_path / "b"
    for label, name in ((1, "AI"), (0, "Real")):  # b's own pictures, unlike a's
        (b / name).mkdir(parents=True)
        for i in range(20):
            make_image(label, 500 + i).save(b / name / f"b_{i:04d}.png")
    for i in range(6):  # six of a's pictures also in b, under other names
        original = a / "AI" / f"ai_{i:04d}.{'png' if i % 3 == 0 else 'jpg'}"
        shutil.copy(original, b / "AI" / f"copy_{i}{original.suffix}")
    dedup = {"phash": 4, "dhash": 6}  # configs/data/default.yaml's
    union = ImageFolderDataModule({"a": str(a), "b": str(b)}, CONFIG, num_workers=0, cache=False, near_duplicates=dedup)
    parts = union.split()
    assert len(union.plan.cross_source_duplicates) == 6
    assert all({r.split("/")[0] for r in group} == {"a", "b"} for group in union.plan.cross_source_duplicates)
    for name, folder in (("a", a), ("b", b)):
        alone = ImageFolderDataModule({name: str(folder)}, CONFIG, num_workers=0, cache=False, near_duplicates=dedup)
        alone = alone.split()
        for split in ("train", "val", "test"):
            assert {s.source_relpath for s in parts[split] if s.source == name} == {
                s.source_relpath for s in alone[split]
            }, (name, split)


def test_near_duplicate_groups_form_within_each_source_so_no_union_moves_a_source(tmp_path):
    """An image of source b within the limit of two images of source a that are not near-duplicates of each other
    (pHash distances a-x 4, x-b 4, a-b 8; limit 4) must not chain them: a's split is the same alone and in the
    union, for every seed (closed over the union, it moved in most of seeds 0-99)."""
    from trustthepixels.data.ingest.fingerprint import FileRecord
    from trustthepixels.data.ingest.scan import Sample
    from trustthepixels.data.loading.planner import source_duplicate_groups
    from trustthepixels.data.loading.split import stratified_split

    def record(relpath: str, phash: int) -> FileRecord:
        return FileRecord(relpath, 1, 0, relpath, phash=f"{phash:016x}", dhash="0" * 16)

    far = random.Random(0).getrandbits  # 64 random bits: about 32 from any other hash
    samples, records = [], {}
    for i in range(24):  # source a: 12 per class; a/AI/0 and a/AI/1 differ in 8 bits of pHash
        label = i % 2
        relpath = f"a/{'AI' if label else 'Real'}/{i}.png"
        phash = {1: 0x0, 3: 0xFF}[i] if i in (1, 3) else far(64)  # the rest far from everything
        samples.append(Sample(tmp_path / relpath, relpath, label, "a", relpath[2:]))
        records[relpath] = record(relpath, phash)
    x = "b/AI/x.png"  # source b: within 4 bits of each of a's two
    samples.append(Sample(tmp_path / x, x, 1, "b", x[2:]))
    records[x] = record(x, 0x0F)
    for i in range(5):  # and b's own others
        relpath = f"b/{'AI' if i % 2 else 'Real'}/{i}.png"
        samples.append(Sample(tmp_path / relpath, relpath, i % 2, "b", relpath[2:]))
        records[relpath] = record(relpath, far(64))

    limits = {"phash": 4, "dhash": 6}
    alone = [s for s in samples if s.source == "a"]
    groups_alone, _ = source_duplicate_groups(alone, records, limits)
    groups_union, across = source_duplicate_groups(samples, records, limits)
    assert groups_alone == [] and groups_union == []  # nothing within a source is within the limit
    assert across == [["a/AI/1.png", "a/AI/3.png", "b/AI/x.png"]]  # reported as leakage between the sources
    for seed in range(100):
        by_union = stratified_split(samples, (0.6, 0.2, 0.2), seed, groups_union)
        by_alone = stratified_split(alone, (0.6, 0.2, 0.2), seed, groups_alone)
        for part in ("train", "val", "test"):
            assert {s.relpath for s in by_union[part] if s.source == "a"} == {s.relpath for s in by_alone[part]}
