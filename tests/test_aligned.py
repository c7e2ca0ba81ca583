"""prepare_data.py source=aligned: photos beside their reconstructions by TAEF2 (the real weights in ../shared) or a
diffusers VAE (a small randomly initialised one saved locally); resumable; pairs kept whole by the split."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from trustthepixels.data.aligned import build
from trustthepixels.data.aligned.autoencoders import load_autoencoder
from trustthepixels.data.aligned.build import prepare_aligned
from trustthepixels.data.ingest.decode import open_rgb
from trustthepixels.data.loading.planner import plan_split
from trustthepixels.data.loading.settings import DataSettings, NearDuplicates
from trustthepixels.errors import UserError

from .conftest import REPO
from .test_combinations import one_line_error

TAEF2_SHA256 = {
    "taef2_encoder.pth": "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
    "taef2_decoder.pth": "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
}


@pytest.fixture
def taef2(shared_dir: Path) -> Path:
    return shared_dir / "weights" / "taesd"


@pytest.fixture
def photos(tmp_path: Path, shared_dir: Path) -> Path:
    """Six real photos (one in a subfolder, one cropped to sides no multiple of 8) and a file that is no image."""
    folder = tmp_path / "photos"
    (folder / "street").mkdir(parents=True)
    sources = sorted((shared_dir / "data" / "diffusiondb-coco" / "Real").iterdir())[:6]
    for path in sources[:4]:
        shutil.copy(path, folder / path.name)
    shutil.copy(sources[4], folder / "street" / sources[4].name)
    Image.open(sources[5]).crop((3, 5, 253, 208)).save(folder / "odd.jpg", quality=92)  # 250 x 203
    (folder / "notes.jpg").write_text("not an image")
    return folder


@pytest.fixture
def tiny_vae(tmp_path: Path) -> Path:
    """A diffusers AutoencoderKL with random weights (4x downscaling), saved as save_pretrained saves any VAE."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1)  # fmt: skip
    vae.save_pretrained(tmp_path / "tiny-vae")
    return tmp_path / "tiny-vae"


def _rows(folder: Path, name: str = "manifest.csv") -> list[dict[str, str]]:
    with open(folder / name, newline="") as f:
        return list(csv.DictReader(f))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


def test_taef2_reconstructs_exactly_as_the_reference_module(taef2):
    """The architecture written out in autoencoders.py against madebyollin/taesd's own taesd.py, on the same files."""
    spec = importlib.util.spec_from_file_location("taesd_reference", taef2 / "taesd.py")
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    model = reference.TAESD(taef2 / "taef2_encoder.pth", taef2 / "taef2_decoder.pth")
    ae = load_autoencoder(str(taef2))
    images = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.decoder(model.encoder(images)).clamp(0, 1)
    assert torch.equal(ae.reconstruct(images), expected)
    assert (ae.name, ae.factor, ae.identity["latent_channels"], ae.identity["files"]) == ("taef2", 8, 32, TAEF2_SHA256)


def test_prepare_data_py_source_aligned(photos, taef2, tmp_path):
    """The documented command: pairs of the same size and format, the manifest's PSNR measured on the files, the bad
    file listed, provenance naming the weights' SHA-256."""
    out = tmp_path / "aligned"
    result = subprocess.run(
        [sys.executable, str(REPO / "prepare_data.py"), "source=aligned", f"real={photos}", f"out={out}",
         f"autoencoder=[{taef2}]", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Wrote 6 pairs" in result.stdout + result.stderr and "notes.jpg" in result.stdout + result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["AI", "Real", "manifest.csv", "provenance.json", "skipped.csv"]
    rows = _rows(out)
    assert [r["source_file"] for r in rows] == sorted(
        p.relative_to(photos).as_posix() for p in photos.rglob("*.jpg") if p.name != "notes.jpg"
    )
    for row in rows:
        real, fake = Image.open(out / row["real"]), Image.open(out / row["ai"])
        assert row["real"].removeprefix("Real/") == row["ai"].removeprefix("AI/")
        assert real.format == fake.format == "PNG" and real.size == fake.size
        assert real.width % 8 == 0 and real.height % 8 == 0 and row["autoencoder"] == "taef2"
        real_pixels, fake_pixels = np.asarray(real), np.asarray(fake)
        assert float(row["psnr_db"]) == pytest.approx(_psnr(real_pixels, fake_pixels), abs=1e-3)
        assert 20 < float(row["psnr_db"]) < 45  # a faithful reconstruction, not a copy
        source = np.asarray(open_rgb(photos / row["source_file"]))
        top, left = (source.shape[0] - real.height) // 2, (source.shape[1] - real.width) // 2
        assert np.array_equal(real_pixels, source[top : top + real.height, left : left + real.width])
    odd = next(r for r in rows if r["source_file"] == "odd.jpg")
    assert Image.open(out / odd["real"]).size == (248, 200)  # centre crop to multiples of 8
    assert _rows(out, "skipped.csv") == [{"source_file": "notes.jpg", "reason": "not an image Pillow can identify"}]
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["source"] == "aligned" and provenance["pairs"] == 6 and provenance["skipped"] == 1
    assert provenance["autoencoders"]["taef2"]["files"] == TAEF2_SHA256
    assert provenance["autoencoders"]["taef2"]["mean_psnr_db"] == pytest.approx(
        np.mean([float(r["psnr_db"]) for r in rows]), abs=1e-3
    )
    assert not list(tmp_path.glob(".aligned.partial"))


def test_a_stopped_build_resumes_and_ends_as_an_uninterrupted_one(photos, taef2, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    prepare_aligned(reference, real=photos, autoencoder=[str(taef2)], max_side=96, batch_size=2)
    seen: list[int] = []
    original = build.Autoencoder.reconstruct

    def counting(self, images):
        seen.append(len(images))
        if sum(seen) > 2:
            raise KeyboardInterrupt  # Ctrl-C during the second batch
        return original(self, images)

    out = tmp_path / "aligned"
    monkeypatch.setattr(build.Autoencoder, "reconstruct", counting)
    with pytest.raises(KeyboardInterrupt):
        prepare_aligned(out, real=photos, autoencoder=[str(taef2)], max_side=96, batch_size=2)
    assert not out.exists() and (tmp_path / ".aligned.partial").is_dir()  # out appears only when complete
    journal = (tmp_path / ".aligned.partial" / "rows.jsonl").read_text().splitlines()
    done_before = sum('"real"' in line for line in journal)
    assert done_before >= 1 and not any((tmp_path / ".aligned.partial").rglob(".*.tmp"))

    with pytest.raises(UserError, match=r"other settings or photos: run the same command as before to resume it"):
        prepare_aligned(out, real=photos, autoencoder=[str(taef2)], max_side=128, batch_size=2)

    seen.clear()
    monkeypatch.setattr(build.Autoencoder, "reconstruct", original)
    resumed: list[int] = []
    monkeypatch.setattr(build.Autoencoder, "reconstruct", lambda self, images: resumed.append(len(images)) or
                        original(self, images))  # fmt: skip
    info = prepare_aligned(out, real=photos, autoencoder=[str(taef2)], max_side=96, batch_size=2)
    assert sum(resumed) == 6 - done_before and info["pairs"] == 6  # the finished pairs were not made again
    assert _rows(out) == _rows(reference)
    for row in _rows(out):
        for column in ("real", "ai"):
            assert (out / row[column]).read_bytes() == (reference / row[column]).read_bytes()
    assert not (tmp_path / ".aligned.partial").exists()
    with pytest.raises(UserError, match="overwrite=true"):
        prepare_aligned(out, real=photos, autoencoder=[str(taef2)], max_side=96)


def test_diffusers_vae_and_two_autoencoders_share_the_photos(photos, taef2, tiny_vae, tmp_path):
    from diffusers import AutoencoderKL

    ae = load_autoencoder(str(tiny_vae))
    assert (ae.kind, ae.factor, ae.name) == ("diffusers", 4, "tiny-vae")
    vae = AutoencoderKL.from_pretrained(tiny_vae).eval()
    images = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ((vae.decode(vae.encode(images * 2 - 1).latent_dist.mode()).sample + 1) / 2).clamp(0, 1)
    assert torch.allclose(ae.reconstruct(images), expected)

    out = tmp_path / "aligned"
    info = prepare_aligned(
        out, real=photos, autoencoder=[str(taef2), str(tiny_vae)], format="jpeg", quality=90, max_side=64
    )
    rows = _rows(out)
    assert sorted(r["autoencoder"] for r in rows) == ["taef2"] * 3 + ["tiny-vae"] * 3  # equal shares
    assert {name: a["pairs"] for name, a in info["autoencoders"].items()} == {"taef2": 3, "tiny-vae": 3}
    assert set(info["autoencoders"]["tiny-vae"]["files"]) == {"config.json", "diffusion_pytorch_model.safetensors"}
    for row in rows:
        real, fake = Image.open(out / row["real"]), Image.open(out / row["ai"])
        assert real.format == fake.format == "JPEG" and real.size == fake.size and max(real.size) <= 64
        assert row["ai"].endswith(".jpg")


def test_a_hub_autoencoder_without_network_names_the_offline_one(tmp_path, photos):
    result = subprocess.run(
        [sys.executable, str(REPO / "prepare_data.py"), "source=aligned", f"real={photos}", f"out={tmp_path / 'a'}",
         "autoencoder=[stabilityai/sd-vae-ft-mse]", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    error = one_line_error(result)
    assert "stabilityai/sd-vae-ft-mse" in error and "autoencoder=../shared/weights/taesd" in error
    assert "Warning" not in result.stderr and not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["source=aligned"], "source=aligned needs real=FOLDER"),
        (["source=aligned", "real=.", "format=gif"], "format='gif': use png or jpeg"),
        (["source=aligned", "real=.", "real_part=holdout"], "real_part='holdout': use train, val, calibration"),
        (["source=aligned", "real=.", "device=gpu"], "device='gpu': use auto"),
        (["source=aligned", "real=.", "autoencoder=[nowhere]"], "autoencoder=nowhere: no such folder"),
    ],
)
def test_aligned_settings_are_refused_in_one_line(tmp_path, overrides, message, make_cfg, monkeypatch, capsys):
    """As prepare_data.py checks them: its command line before Hydra starts, then its settings in `cli.run`."""
    from trustthepixels.cli import check_command_line, run
    from trustthepixels.data.prepare import prepare

    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64)).save(tmp_path / "photo.png")  # real=. holds a photo
    arguments = [*overrides, f"out={tmp_path / 'a'}"]
    monkeypatch.setattr(sys, "argv", ["prepare_data.py", *arguments])
    with pytest.raises(SystemExit):
        check_command_line(REPO / "configs", "prepare_data")
        run(prepare, make_cfg(*arguments, config_name="prepare_data"))
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Error:")]
    assert message in error and not (tmp_path / "a").exists()


def test_real_part_takes_only_that_part_of_the_sources_split(shared_dir, taef2, tmp_path, make_cfg):
    """real_part=test: exactly the real photos a training run on that root tests on, with the data group's split
    settings (prepare_data's composed real_split is held to train.py's composed data group)."""
    from trustthepixels.config import to_plain

    data_defaults = to_plain(make_cfg().data)
    real_split = to_plain(make_cfg(config_name="prepare_data").real_split)
    assert real_split == {k: data_defaults[k] for k in ("split", "calibration_share", "near_duplicates")}
    root = tmp_path / "source"
    for name in ("AI", "Real"):
        (root / name).mkdir(parents=True)
        for path in sorted((shared_dir / "data" / "diffusiondb-coco" / name).iterdir())[:20]:
            Image.open(path).resize((64, 64)).save(root / name / path.name)
    info = prepare_aligned(
        tmp_path / "aligned", real=root, autoencoder=[str(taef2)], real_part="test", real_split=real_split
    )
    plan = plan_split({"source": root}, DataSettings(near_duplicates=NearDuplicates(**real_split["near_duplicates"])))
    expected = sorted(s.path.name for s in plan.parts["test"] if s.label == 0)
    assert sorted(r["source_file"] for r in _rows(tmp_path / "aligned")) == expected and len(expected) == 2
    assert info["real_part"]["part"] == "test"


@pytest.mark.parametrize("near_duplicates", [None, {"phash": 4, "dhash": 6}])
def test_pairs_are_never_split(photos, taef2, tmp_path, near_duplicates):
    """The manifest keeps each photo with its reconstruction, near-duplicate search on or off, alone or in a union."""
    out = tmp_path / "aligned"
    prepare_aligned(out, real=photos, autoencoder=[str(taef2)], max_side=64)
    for roots in ({"aligned": out}, {"aligned": out, "other": shutil.copytree(out, tmp_path / "other")}):
        near = near_duplicates and NearDuplicates(**near_duplicates)
        plan = plan_split(
            roots, DataSettings(split=[0.5, 0.25, 0.25], seed=3, near_duplicates=near, calibration_share=0)
        )
        part_of = {s.relpath: name for name, samples in plan.parts.items() for s in samples}
        for source in roots:
            prefix = f"{source}/" if len(roots) > 1 else ""
            pairs = [(prefix + r["real"], prefix + r["ai"]) for r in _rows(roots[source])]
            assert all(part_of[real] == part_of[ai] for real, ai in pairs)
            assert len({part_of[real] for real, _ in pairs}) >= 2  # the pairs themselves are spread over the split


# ------------------------------------------------------------------------------------ data.pair_augment=true


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_paired_sampler_puts_each_pair_side_by_side_with_one_seed(replicas):
    from trustthepixels.data.loading.dataset import EpochSampler

    pairs = [(0, 10), (1, 11), (2, 12), (3, 13)]
    size = 17  # 4 pairs and 9 other images
    epoch = [0]
    samplers = [EpochSampler(size, 5, shuffle=True, rank=rank, num_replicas=replicas, pad=True, pairs=pairs,
                             epoch_of=lambda: epoch[0]) for rank in range(replicas)]  # fmt: skip
    orders = []
    for _ in range(2):
        items = [list(sampler) for sampler in samplers]
        assert len({len(i) for i in items}) == 1 and all(len(i) == len(s) for i, s in zip(items, samplers, strict=True))
        seen = []
        for rank_items in items:
            assert len(rank_items) % 2 == 0 or replicas == 1
            for k in range(0, len(rank_items) - 1, 2):
                (a, seed_a), (b, seed_b) = rank_items[k], rank_items[k + 1]
                if (a, b) in pairs:
                    assert seed_a == seed_b
                elif a != b:  # (an odd image out is doubled to fill its slot when ranks share the images)
                    assert (b, a) not in pairs and seed_a != seed_b  # other images keep their own draws
            index = [i for i, _ in rank_items]
            for a, b in pairs:  # a pair sits at 2k, 2k+1 of one rank's order, photo first, or not at all
                assert (a in index) == (b in index)
                if a in index:
                    assert index.index(a) % 2 == 0 and index[index.index(a) + 1] == b
            seen += index
        assert set(seen) == set(range(size))  # every image, every epoch
        if replicas == 1:
            assert sorted(seen) == list(range(size))
        orders.append(seen)
        epoch[0] += 1
    assert orders[0] != orders[1]


@pytest.fixture
def aligned_set(tmp_path, shared_dir, taef2) -> Path:
    """An aligned set of 16 diffusiondb-coco photos at 128 px."""
    photos = tmp_path / "photos16"
    photos.mkdir()
    for path in sorted((shared_dir / "data" / "diffusiondb-coco" / "Real").iterdir())[:16]:
        shutil.copy(path, photos / path.name)
    prepare_aligned(tmp_path / "aligned16", real=photos, autoencoder=[str(taef2)], max_side=128)
    return tmp_path / "aligned16"


@pytest.mark.parametrize("augment", ["none", "robust"])
def test_pair_augment_crops_a_photo_and_its_reconstruction_alike_in_one_batch(aligned_set, augment):
    """A batch's images 2k and 2k+1 are a photo and its reconstruction under one random crop (and blur and JPEG): the
    two agree as a faithful reconstruction does (> 20 dB); without pair_augment, pairs are cropped independently."""
    from trustthepixels.data.loading.datamodule import ImageFolderDataModule

    def batches(pair_augment: bool) -> list[float]:
        dm = ImageFolderDataModule(aligned_set, {"input_size": (3, 64, 64)}, batch_size=8, num_workers=0, cache=False,
                                   split=[0.75, 0.125, 0.125], augment=augment, pair_augment=pair_augment,
                                   crop_scale=[0.2, 0.5])  # fmt: skip
        dm.setup("fit")
        samples = dm.datasets["train"].samples
        partner = {samples[a].relpath: samples[b].relpath for a, b in dm.train_pairs()}
        assert len(partner) == len(samples) // 2 == 12  # pairs are never split: all 12 in training
        agreement = []
        for images, labels, indices in dm.train_dataloader():
            names = [samples[i].relpath for i in indices.tolist()]
            if pair_augment:
                assert labels.tolist() == [0, 1] * (len(labels) // 2)
                assert all(partner[names[k]] == names[k + 1] for k in range(0, len(names), 2))
                agreement += [_psnr(images[k].numpy(), images[k + 1].numpy()) for k in range(0, len(names), 2)]
            else:
                pixels = dict(zip(names, images, strict=True))
                agreement += [_psnr(pixels[a].numpy(), pixels[b].numpy()) for a, b in partner.items()
                              if a in pixels and b in pixels]  # fmt: skip
        return agreement

    paired, unpaired = batches(True), batches(False)
    assert len(paired) == 12 and min(paired) > 20
    assert np.median(unpaired) < 18


def test_paired_batches_flip_each_pair_alike():
    from trustthepixels.model.module import DetectorModule

    module = DetectorModule("resnet18", {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3},
                            pretrained=False, flip="dihedral")  # fmt: skip
    torch.manual_seed(0)
    images = torch.randint(0, 255, (8, 3, 16, 16), dtype=torch.uint8).repeat_interleave(2, dim=0)  # 8 equal pairs
    module.paired_batches = True
    for _ in range(5):
        out = module.random_flip(images)
        assert torch.equal(out[0::2], out[1::2]) and not torch.equal(out, images)
    module.paired_batches = False
    assert any(not torch.equal((out := module.random_flip(images))[0::2], out[1::2]) for _ in range(5))


def test_pair_augment_refuses_an_odd_batch_and_a_root_without_pairs(aligned_set, image_folder):
    from trustthepixels.data.loading.datamodule import ImageFolderDataModule
    from trustthepixels.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^data.pair_augment=true needs an even data.batch_size .* not 7: e.g. "
                       r"data.batch_size=8$"):  # fmt: skip
        ImageFolderDataModule(aligned_set, {"input_size": (3, 32, 32)}, batch_size=7, pair_augment=True)
    dm = ImageFolderDataModule(image_folder, {"input_size": (3, 32, 32)}, batch_size=4, num_workers=0,
                               pair_augment=True)  # fmt: skip
    with pytest.raises(ConfigError, match=r"no pair of a photo and its reconstruction .* source=aligned"):
        dm.setup("fit")


# ----------------------------------------------------------------------------------- the benchmark's aligned rows


def test_union_rows_and_the_comparison_are_checked_before_any_row_trains():
    from trustthepixels.errors import ConfigError
    from trustthepixels.generalization.rows import benchmark_sources, rows, trained_sources

    assert rows({"a": 1, "b": 2, "t": 3}, ["t"], False, ["a+b"]) == ["a", "b", "a+b"]
    folders = {name: str(REPO) for name in ("a", "b", "t")}
    assert trained_sources("b+a", {k: Path(v) for k, v in folders.items()}, ["t"]) == ["a", "b"]
    base = {"sources": folders, "test_only": ["t"], "leave_one_out": False, "device": "auto", "recalibrate": False}
    for extra, message in [
        ({"unions": ["a+t"]}, "unions=['a+t']: 'a+t' is not two or more trainable sources joined by +, e.g. a+b"),
        ({"comparison": {"baseline": "c", "focus": [], "generators": {}}}, "comparison.baseline='c': use one of"),
        ({"comparison": {"baseline": "a", "focus": ["x"], "generators": {}}}, "comparison: ['x'] not in sources"),
        ({"comparison": {"baseline": None, "focus": [], "generators": {"t": "/no.csv"}}}, "/no.csv: no such file"),
        # was: matrix.md silently without its paired tables
        (
            {"comparison": {"baseline": None, "focus": [], "generators": {"t": str(REPO / "README.md")}}},
            "comparison.focus and comparison.generators compare rows against comparison.baseline: set it to a row "
            "of the matrix, e.g. comparison.baseline=a",
        ),
        ({"comparison": {"baseline": None, "focus": ["a"], "generators": {}}}, "comparison.baseline=a"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            benchmark_sources(OmegaConf.create(base | extra))


@pytest.mark.slow
def test_aligned_benchmark_pairs_the_rows_that_hold_pairs_and_compares_them_with_the_baseline(tmp_path, shared_dir,
                                                                                              taef2):  # fmt: skip
    """The documented pair of commands on a small diffusiondb-coco: prepare_data.py source=aligned real_part=train, then
    benchmark.py benchmark=shared_aligned experiment=aligned_lite0_native (tiny model, one short epoch)."""
    from .conftest import TINY
    from .test_combinations import command, ok

    root = tmp_path / "ddb"
    for name in ("AI", "Real"):
        (root / name).mkdir(parents=True)
        for path in sorted((shared_dir / "data" / "diffusiondb-coco" / name).iterdir())[:24]:
            Image.open(path).resize((64, 64)).save(root / name / path.name, quality=90)
    aligned = tmp_path / "aligned"
    ok(command("prepare_data.py", "source=aligned", f"real={root}", "real_part=train", f"out={aligned}",
               f"autoencoder=[{taef2}]", f"hydra.run.dir={tmp_path / 'prep'}", cwd=tmp_path))  # fmt: skip
    photos = {r["source_file"] for r in _rows(aligned)}
    args = ["benchmark=shared_aligned", "experiment=aligned_lite0_native", f"sources.diffusiondb_coco={root}",
            f"sources.aligned={aligned}", "~sources.real_vs_ai", "~sources.cifake", "comparison.focus=[ml72,poidh]",
            "debug=limit", *TINY, "model.weights=null", "trainer.max_epochs=1", f"paths.log_dir={tmp_path / 'outputs'}",
            f"paths.data_dir={tmp_path / 'data'}"]  # fmt: skip
    result = ok(command("benchmark.py", *args, cwd=tmp_path))
    assert "Row diffusiondb_coco trains on no aligned set: data.pair_augment does not apply" in result.stdout
    (sweep,) = (tmp_path / "outputs" / "benchmark" / "multiruns").iterdir()
    with open(sweep / "matrix.csv", newline="") as f:
        trained_on = {c["trained_on"] for c in csv.DictReader(f)}
    assert trained_on == {"diffusiondb_coco", "aligned", "diffusiondb_coco+aligned"}
    for row in sweep.iterdir():
        if not (row / "benchmark_row.json").is_file():
            continue
        with open(row / "split.csv", newline="") as f:
            split = {r["path"]: r for r in csv.DictReader(f)}
        trained = json.loads((row / "benchmark_row.json").read_text())["trained_sources"]
        if "aligned" in trained:
            prefix = "aligned/" if len(trained) > 1 else ""
            for pair in _rows(aligned):
                assert split[prefix + pair["real"]]["split"] == split[prefix + pair["ai"]]["split"]
        if len(trained) > 1:  # real_part=train: none of diffusiondb_coco's other photos was reconstructed
            held_out = {Path(p).name for p, r in split.items() if r["source"] == "diffusiondb_coco"
                        and r["split"] != "train" and r["label"] == "0"}  # fmt: skip
            assert held_out and not held_out & photos
    matrix = (sweep / "matrix.md").read_text()
    assert "## Paired against diffusiondb_coco" in matrix and "| mean of ml72, poidh |" in matrix
    table = matrix[matrix.index("## poidh per generator") :]
    assert all(g in table for g in ("flux-schnell (28)", "pixart (28)", "sdxl (25)", "openfake (28)"))
    assert re.search(r"^\| diffusiondb_coco\+aligned \| \d\.\d{3} \[", table, flags=re.MULTILINE)
