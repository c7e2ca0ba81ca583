"""prepare_data: the Hugging Face reduction against the original script, and the release zip over loopback HTTP."""

from __future__ import annotations

import io
import json
import shutil
import stat
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import datasets
import numpy as np
import pytest
from PIL import Image

from bench.baselines import original_reduction
from trustthepixels.data.ingest.archive import UnsafeArchiveError
from trustthepixels.data.ingest.download import DownloadError
from trustthepixels.data.ingest.prepare import atomic_output_dir, prepare_from_hf, prepare_from_release, select_rows
from trustthepixels.data.ingest.scan import DatasetLayoutError
from trustthepixels.data.loading.datamodule import ImageFolderDataModule

from .conftest import make_image, write_image_folder

# ------------------------------------------------------------------------------------------- Hugging Face


def _encoded(image: Image.Image, fmt: str, **kwargs) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return {"bytes": buffer.getvalue(), "path": None}


@pytest.fixture(scope="module")
def hf_dataset_dir(tmp_path_factory) -> Path:
    """70 rows in the Hub dataset's schema (Image + ClassLabel AiArtData/RealArt), stored as parquet, with the
    variety of the real one: JPEG and PNG, RGB / L / RGBA / P modes, and JPEGs with an EXIF orientation."""
    root = tmp_path_factory.mktemp("hf-dataset")
    images, labels = [], []
    for i in range(70):
        label = 0 if i % 7 < 4 else 1  # 40 AiArtData (0), 30 RealArt (1): unbalanced, interleaved rows
        image = make_image(1 - label, i, size=40 + i % 5)
        if i % 5 == 1:
            images.append(_encoded(image.convert("L"), "PNG"))
        elif i % 5 == 2:
            images.append(_encoded(image.convert("RGBA"), "PNG"))
        elif i % 5 == 3:
            images.append(_encoded(image.convert("P"), "PNG"))
        elif i % 5 == 4:
            exif = Image.Exif()
            exif[0x0112] = 6  # rotate 90: datasets' decoder applies it
            images.append(_encoded(image, "JPEG", exif=exif))
        else:
            images.append(_encoded(image, "JPEG", quality=90))
        labels.append(label)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["AiArtData", "RealArt"])}
    )
    ds = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    (root / "data").mkdir()
    ds.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.jpg"))}


def test_hf_reduction_equals_the_original_script(hf_dataset_dir, tmp_path, monkeypatch):
    train = datasets.load_dataset(str(hf_dataset_dir), split="train")
    original_reduction(train, tmp_path / "original", per_class=12, seed=42)

    decoded = []
    real_decode = datasets.Image.decode_example
    monkeypatch.setattr(
        datasets.Image, "decode_example", lambda self, *a, **k: decoded.append(1) or real_decode(self, *a, **k)
    )
    info = prepare_from_hf(tmp_path / "ours", dataset=str(hf_dataset_dir), per_class=12, seed=42, workers=2)

    assert len(decoded) == 24, "labels must come from the label column: only the 24 chosen images are decoded"
    original, ours = _files(tmp_path / "original"), _files(tmp_path / "ours")
    assert list(ours) == list(original) and len(ours) == 24
    for name in original:  # same encoder, same pixels: byte-identical files
        assert ours[name] == original[name], name
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "ours" / name)), np.asarray(Image.open(tmp_path / "original" / name))
        )
    assert info["rows"] == 70 and len(info["ai_rows"]) == 12
    assert (tmp_path / "ours" / "provenance.json").is_file()


def test_label_names_are_read_from_the_dataset_not_assumed(hf_dataset_dir, tmp_path):
    # In this dataset AiArtData is label 0: code that assumed "1 = AI" would swap the classes.
    ai_rows = prepare_from_hf(tmp_path / "out", dataset=str(hf_dataset_dir), per_class=5)["ai_rows"]
    assert all(i % 7 < 4 for i in ai_rows)
    with pytest.raises(ValueError, match="labels are"):
        prepare_from_hf(tmp_path / "other", dataset=str(hf_dataset_dir), per_class=5, ai_label_name="FAKE")
    assert not (tmp_path / "other").exists()


def test_select_rows_is_the_original_sampling():
    import random

    labels = [i % 3 % 2 for i in range(300)]
    random.seed(42)
    expected_ai = random.sample([i for i, label in enumerate(labels) if label == 1], 20)
    expected_real = random.sample([i for i, label in enumerate(labels) if label == 0], 20)
    assert select_rows(labels, 1, 0, 20, 42) == (expected_ai, expected_real)
    with pytest.raises(ValueError, match="only"):
        select_rows(labels, 1, 0, 1000, 42)


# ---------------------------------------------------------------------------------------------- release zip


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files with Range support; paths under /flaky/ drop the connection halfway the first time."""

    dropped: ClassVar[set[str]] = set()

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        flaky = name.startswith("flaky/")
        path = Path(self.directory) / name.removeprefix("flaky/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if flaky and name not in self.dropped:
            self.dropped.add(name)
            self.wfile.write(body[: len(body) // 2])
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def zip_server(tmp_path_factory):
    """A loopback HTTP server over a folder of good and hostile zips."""
    folder = tmp_path_factory.mktemp("served")
    images = write_image_folder(tmp_path_factory.mktemp("images") / "dataset", per_class=4)
    with zipfile.ZipFile(folder / "good.zip", "w") as zf:
        for path in sorted(images.rglob("*.*")):
            zf.write(path, "dataset/" + path.relative_to(images).as_posix())
    good = (folder / "good.zip").read_bytes()
    (folder / "truncated.zip").write_bytes(good[: len(good) // 2])
    for name, entry in (("dotdot.zip", "../evil.txt"), ("absolute.zip", "/tmp/evil.txt")):
        shutil.copy(folder / "good.zip", folder / name)
        with zipfile.ZipFile(folder / name, "a") as zf:
            zf.writestr(zipfile.ZipInfo(entry), "evil")
    shutil.copy(folder / "good.zip", folder / "symlink.zip")
    with zipfile.ZipFile(folder / "symlink.zip", "a") as zf:
        link = zipfile.ZipInfo("dataset/AI/link.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with zipfile.ZipFile(folder / "corrupt.zip", "w", zipfile.ZIP_STORED) as zf:  # fails midway: bad CRC
        for path in sorted(images.rglob("*.*")):
            zf.write(path, "dataset/" + path.relative_to(images).as_posix())
    data = bytearray((folder / "corrupt.zip").read_bytes())
    last = zipfile.ZipFile(folder / "corrupt.zip").infolist()[-1]
    data[last.header_offset + 30 + len(last.filename) + 10] ^= 0xFF
    (folder / "corrupt.zip").write_bytes(bytes(data))

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _no_leftovers(parent: Path) -> bool:
    return not any(p.name.startswith(".dataset.staging") for p in parent.iterdir())


def test_release_zip_lands_normalised(zip_server, tmp_path):
    info = prepare_from_release(tmp_path / "dataset", url=f"{zip_server}/good.zip")
    assert sorted(p.name for p in (tmp_path / "dataset").iterdir()) == ["AI", "Real", "provenance.json"]
    assert len(list((tmp_path / "dataset" / "AI").iterdir())) == 4
    assert len(info["archive_sha256"]) == 64 and info["archive_bytes"] > 0
    assert not (tmp_path / "dataset.zip").exists() and _no_leftovers(tmp_path)


def test_prepare_data_py_as_a_user_runs_it(zip_server, tmp_path):
    """`python prepare_data.py`, with the published URL pointed at the loopback server (no network here)."""
    import subprocess
    import sys

    from .conftest import REPO

    result = subprocess.run(
        [sys.executable, str(REPO / "prepare_data.py"), f"url={zip_server}/good.zip", f"out={tmp_path / 'dataset'}",
         f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "dataset" / "provenance.json").read_text())["archive_bytes"] > 0
    assert len(list((tmp_path / "dataset" / "Real").iterdir())) == 4


def test_dropped_connection_is_resumed(zip_server, tmp_path):
    info = prepare_from_release(tmp_path / "dataset", url=f"{zip_server}/flaky/good.zip")
    reference = prepare_from_release(tmp_path / "reference", url=f"{zip_server}/good.zip")
    assert info["archive_sha256"] == reference["archive_sha256"]


@pytest.mark.parametrize("name", ["dotdot.zip", "absolute.zip", "symlink.zip", "truncated.zip", "corrupt.zip"])
def test_bad_zips_are_refused_and_nothing_is_written(zip_server, tmp_path, name):
    with pytest.raises(UnsafeArchiveError):
        prepare_from_release(tmp_path / "dataset", url=f"{zip_server}/{name}")
    assert not (tmp_path / "dataset").exists() and _no_leftovers(tmp_path)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()
    # The refused archive is not kept either: only the hidden lock file remains beside `out`.
    assert not (tmp_path / "dataset.zip").exists() and not (tmp_path / "dataset.zip.part").exists()
    assert {p.name for p in tmp_path.iterdir()} <= {".dataset.lock"}


def test_no_network_names_the_run_that_works_offline(tmp_path):
    with pytest.raises(DownloadError, match="experiment=real_vs_ai_lite0") as error:
        prepare_from_release(tmp_path / "dataset", url="http://127.0.0.1:9/dataset.zip", retries=1)  # nothing listens
    assert "source=hf dataset=DIR" in str(error.value) and not (tmp_path / "dataset").exists()


def test_wrong_checksum_and_missing_file(zip_server, tmp_path):
    with pytest.raises(DownloadError, match="SHA-256"):
        prepare_from_release(tmp_path / "dataset", url=f"{zip_server}/good.zip", sha256="0" * 64)
    with pytest.raises(DownloadError, match="404"):
        prepare_from_release(tmp_path / "dataset", url=f"{zip_server}/missing.zip")
    assert not (tmp_path / "dataset").exists()


def test_existing_dataset_is_protected_unless_overwrite(zip_server, tmp_path):
    out = tmp_path / "dataset"
    (out / "AI").mkdir(parents=True)
    (out / "AI" / "mine.jpg").write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite=true"):
        prepare_from_release(out, url=f"{zip_server}/good.zip")
    with pytest.raises(UnsafeArchiveError):  # a failed overwrite keeps the old folder too
        prepare_from_release(out, url=f"{zip_server}/dotdot.zip", overwrite=True)
    assert (out / "AI" / "mine.jpg").read_bytes() == b"keep me"
    prepare_from_release(out, url=f"{zip_server}/good.zip", overwrite=True)
    assert not (out / "AI" / "mine.jpg").exists() and len(list((out / "AI").iterdir())) == 4


def test_interrupted_preparation_leaves_no_dataset(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(tmp_path / "dataset") as staging:
        (staging / "AI").mkdir()
        (staging / "AI" / "ai_0000.jpg").write_bytes(b"half done")
        raise KeyboardInterrupt
    assert not (tmp_path / "dataset").exists() and _no_leftovers(tmp_path)
    # A run killed outright leaves its staging folder behind: the next run removes it.
    (tmp_path / ".dataset.staging-killed").mkdir()
    with atomic_output_dir(tmp_path / "dataset") as staging:
        (staging / "AI").mkdir()
    assert (tmp_path / "dataset" / "AI").is_dir() and _no_leftovers(tmp_path)
    # Killed while replacing a dataset, between moving the old one aside and removing it: the next run goes on.
    (tmp_path / ".dataset.old" / "AI").mkdir(parents=True)
    with atomic_output_dir(tmp_path / "dataset", overwrite=True) as staging:
        (staging / "Real").mkdir()
    assert (tmp_path / "dataset" / "Real").is_dir() and not (tmp_path / "dataset" / "AI").exists()
    assert not (tmp_path / ".dataset.old").exists() and _no_leftovers(tmp_path)


def test_datamodule_downloads_on_first_use(zip_server, tmp_path):
    dm = ImageFolderDataModule(
        tmp_path / "dataset", {"input_size": (3, 32, 32)}, url=f"{zip_server}/good.zip", num_workers=0
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.summary()["images"] == {"train": 4, "val": 2, "calibration": 0, "test": 2}


def test_offline_first_use_says_how_to_get_the_data(tmp_path):
    dm = ImageFolderDataModule(tmp_path / "dataset", {"input_size": (3, 32, 32)}, url="http://127.0.0.1:9/dataset.zip")
    with pytest.raises(DatasetLayoutError, match=r"prepare_data\.py") as err:
        dm.prepare_data()
    assert str(tmp_path / "dataset") in str(err.value) and not (tmp_path / "dataset").exists()
