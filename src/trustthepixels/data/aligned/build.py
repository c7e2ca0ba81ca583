"""`prepare_data.py source=aligned`: every photo of a folder beside its reconstruction by an autoencoder.

    out/Real/<photo>.png   the photo, decoded as the project decodes (RGB), centre-cropped to the autoencoder's
                           multiple of 8 (after an optional downscale to max_side)
    out/AI/<photo>.png     the same pixels encoded and decoded: same size, same format and quality
    out/manifest.csv       real, ai, source_file, autoencoder, psnr_db: one row per pair (the split reads it)
    out/skipped.csv        the files that could not be used, and why
    out/provenance.json    the photos, the autoencoders (their files' SHA-256, or hub id), the settings

The work happens in `.<out>.partial/` beside `out`: every finished pair is recorded there, so a run that is
stopped resumes where it was; `out` appears only when all photos are done, in one rename.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from PIL import Image

from trustthepixels.config import resolve_device, validated
from trustthepixels.data.aligned.autoencoders import Autoencoder, load_autoencoder
from trustthepixels.data.ingest.decode import ImageDecodeError, open_rgb, opened, unusable_reason
from trustthepixels.data.ingest.pairs import MANIFEST, MANIFEST_COLUMNS
from trustthepixels.data.ingest.prepare import refuse_existing, replace_folder, write_provenance
from trustthepixels.data.ingest.scan import DatasetLayoutError, find_class_dirs
from trustthepixels.data.ingest.settings import PrepareSettings
from trustthepixels.data.loading.planner import plan_split
from trustthepixels.data.loading.settings import DataSettings
from trustthepixels.errors import UserError
from trustthepixels.quiet import progress

log = logging.getLogger(__name__)

FORMATS = {"png": ".png", "jpeg": ".jpg"}


@dataclass(frozen=True)
class Photo:
    path: Path  # the file
    relpath: str  # within the photo folder: the manifest's source_file
    name: str  # its pair's path under Real/ and AI/
    autoencoder: str


def _walk(folder: Path) -> list[Path]:
    return sorted(
        (Path(d) / n for d, _, names in os.walk(folder, followlinks=True) for n in names), key=lambda p: p.as_posix()
    )


def photo_files(real: Path, part: str | None, split: DataSettings) -> tuple[Path, list[Path]]:
    """The photo folder and its files: every file below `real` (recursively), or below its `Real/` when it is a
    dataset root; with `part`, only the real images of that part of the project's split of `real` (`split`: the
    data settings a training run on it splits it with)."""
    real = real.expanduser().resolve()
    if not real.is_dir():
        raise DatasetLayoutError(f"real={real} is not a folder: point it at a folder of real photos")
    try:
        class_dirs = find_class_dirs(real)
    except DatasetLayoutError:
        class_dirs = None
    if part is None:
        if class_dirs is None:
            return real, _walk(real)
        log.info("%s is a dataset root: its photos are those of %s/", real, class_dirs[0].name)
        return class_dirs[0], _walk(class_dirs[0])
    if class_dirs is None:
        raise DatasetLayoutError(
            f"real_part={part} needs real= to be a dataset root (AI/ and Real/): {real} is not one"
        )
    plan = plan_split({real.name: real}, split)
    chosen = [s.path for s in plan.parts[part] if s.label == 0]
    return class_dirs[0], sorted(chosen, key=lambda p: p.as_posix())


def assign(folder: Path, files: Sequence[Path], autoencoders: Sequence[str], seed: int, suffix: str) -> list[Photo]:
    """Each photo's output name and autoencoder: several autoencoders share the photos in equal parts, in an
    order fixed by the seed and each file's path (never by the listing)."""
    relpaths = [p.relative_to(folder).as_posix() for p in files]
    stems = [rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel for rel in relpaths]
    clashes = {stem for stem in stems if stems.count(stem) > 1} if len(set(stems)) < len(stems) else set()
    names = [
        f"{stem}_{rel.rsplit('.', 1)[-1]}{suffix}" if stem in clashes else stem + suffix
        for stem, rel in zip(stems, relpaths, strict=True)
    ]
    ranked = sorted(range(len(files)), key=lambda i: hashlib.sha256(f"{seed}\0{relpaths[i]}".encode()).hexdigest())
    chosen = {i: autoencoders[rank % len(autoencoders)] for rank, i in enumerate(ranked)}
    return [Photo(files[i], relpaths[i], names[i], chosen[i]) for i in range(len(files))]


def target_size(size: tuple[int, int], factor: int, max_side: int | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """(width, height) after the optional downscale (longer side to max_side), and after the centre crop to
    multiples of `factor` that follows it."""
    width, height = size
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    return (width, height), (width - width % factor, height - height % factor)


def load_photo(path: Path, scaled: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """The photo as the project decodes it, downscaled (Lanczos) to `scaled` if it is larger, then centre-cropped
    to `size`: HWC uint8, the pixels both files of the pair start from."""
    image = open_rgb(path)
    if image.size != scaled:
        image = image.resize(scaled, Image.Resampling.LANCZOS)
    left, top = (image.width - size[0]) // 2, (image.height - size[1]) // 2
    return np.asarray(image.crop((left, top, left + size[0], top + size[1])))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _save(pixels: np.ndarray, path: Path, image_format: str, quality: int) -> None:
    """Through a temporary file and a rename: a stopped run never leaves half an image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    options = {"quality": quality} if image_format == "jpeg" else {}
    Image.fromarray(pixels).save(tmp, format=image_format.upper(), **options)
    os.replace(tmp, path)


class _Journal:
    """The finished pairs and skipped files of a build, one JSON line each, appended as they are done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
        self.done = {row["source_file"] for row in self.rows}

    def add(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        self.rows.append(row)
        self.done.add(row["source_file"])


Batch = tuple[tuple[int, int], list[tuple[Photo, tuple[int, int]]]]  # output size, [(photo, its downscaled size)]


def _batches(
    photos: list[Photo], ae: Autoencoder, max_side: int | None, batch_size: int, journal: _Journal
) -> Iterator[Batch]:
    """Batches of photos that come out at the same size (their headers read, no pixels decoded); the files that
    cannot be used are journalled as skipped."""
    by_size: dict[tuple[int, int], list[tuple[Photo, tuple[int, int]]]] = defaultdict(list)
    for photo in photos:
        try:
            with opened(photo.path) as img:
                size = img.size
        except (ImageDecodeError, OSError) as err:
            journal.add({"source_file": photo.relpath, "skipped": getattr(err, "reason", str(err))})
            continue
        scaled, out = target_size(size, ae.factor, max_side)
        reason = unusable_reason(*size, 8) or (
            None if min(out) >= max(8, ae.factor) else f"too small ({size[0]}x{size[1]} px) for {ae.name}"
        )
        if reason:
            journal.add({"source_file": photo.relpath, "skipped": reason})
            continue
        by_size[out].append((photo, scaled))
    for size in sorted(by_size):
        members = by_size[size]
        for start in range(0, len(members), batch_size):
            yield size, members[start : start + batch_size]


def reconstruct_all(
    photos: list[Photo], ae: Autoencoder, work: Path, journal: _Journal, s: PrepareSettings, device: torch.device
) -> None:
    """Encode and decode `photos` in batches of one size, each pair journalled once both files are written; the
    next batch's files are decoded (in threads) while this one runs."""
    pending = [p for p in photos if p.relpath not in journal.done]
    batches = list(_batches(pending, ae, s.max_side, s.batch_size, journal))
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:

        def decode(i: int) -> list:
            if i >= len(batches):
                return []
            size, members = batches[i]
            return [pool.submit(load_photo, p.path, scaled, size) for p, scaled in members]

        def write_pair(photo: Photo, real: np.ndarray, fake: np.ndarray) -> dict[str, Any]:
            _save(real, work / "Real" / photo.name, s.format, s.quality)
            _save(fake, work / "AI" / photo.name, s.format, s.quality)
            return {
                "real": f"Real/{photo.name}",
                "ai": f"AI/{photo.name}",
                "source_file": photo.relpath,
                "autoencoder": ae.name,
                "psnr_db": round(psnr(real, fake), 3),
            }

        ahead = decode(0)
        for i, (_, members) in enumerate(progress(batches, f"Reconstructing with {ae.name}", total=len(batches))):
            loading, ahead = ahead, decode(i + 1)
            kept, images = [], []
            for (photo, _), future in zip(members, loading, strict=True):
                try:
                    images.append(future.result())
                    kept.append(photo)
                except (ImageDecodeError, OSError) as err:  # the header read, the pixels did not
                    journal.add({"source_file": photo.relpath, "skipped": getattr(err, "reason", str(err))})
            if not kept:
                continue
            batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(device).float().div(255)
            fakes = ae.reconstruct(batch).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            written = [pool.submit(write_pair, *args) for args in zip(kept, images, fakes, strict=True)]
            for future in written:
                journal.add(future.result())


def _job(real: Path, photos: Sequence[Photo], settings: dict[str, Any]) -> dict[str, Any]:
    """What decides the output: a partial build is resumed only under the same."""
    listing = hashlib.sha256("\n".join(f"{p.relpath}\t{p.autoencoder}" for p in photos).encode()).hexdigest()
    return {"real": str(real), "photos": len(photos), "photos_sha256": listing, **settings}


def prepare_aligned(out: Path, /, **settings: Any) -> dict[str, Any]:
    """Build (or resume building) the aligned set of `real` in `out`; returns its provenance. `settings` are
    prepare_data's (`PrepareSettings`: real, autoencoder, real_part, real_split, format, quality, max_side, batch_size,
    seed, device, overwrite); the ones left out take their defaults."""
    s = validated(PrepareSettings, {"source": "aligned", **settings}, "")
    out = Path(out).expanduser().resolve()
    if not s.autoencoder:
        raise UserError("autoencoder=[] names no autoencoder: e.g. autoencoder=../shared/weights/taesd")
    # Local folders by their absolute path: what provenance records, and what a resumed run must name again.
    autoencoders = [str(Path(a).expanduser().resolve()) if Path(a).expanduser().exists() else a for a in s.autoencoder]
    # real_part: split as a training run on real= with prepare_data's seed splits it.
    split = replace(DataSettings(), **vars(s.real_split), seed=s.seed)
    folder, files = photo_files(Path(s.real), s.real_part, split)
    if not files:
        raise DatasetLayoutError(f"real={s.real}: no files in {folder}")
    photos = assign(folder, files, autoencoders, s.seed, FORMATS[s.format])
    recorded = {  # what a resumed build must match
        "autoencoders": autoencoders,
        "format": s.format,
        "quality": s.quality,
        "max_side": s.max_side,
        "seed": s.seed,
        "real_part": {"part": s.real_part, **dataclasses.asdict(s.real_split)} if s.real_part else None,
    }
    job = _job(folder, photos, recorded)
    work = out.with_name(f".{out.name}.partial")
    with FileLock(out.with_name(f".{out.name}.lock")):
        refuse_existing(out, s.overwrite)
        if work.exists():
            previous = json.loads((work / "job.json").read_text()) if (work / "job.json").is_file() else None
            if previous != job:
                raise UserError(
                    f"{work} holds an interrupted build with other settings or photos: run the same command as "
                    f"before to resume it, or delete {work} to start again"
                )
        else:
            work.mkdir(parents=True)
            (work / "job.json").write_text(json.dumps(job, indent=2) + "\n")
        journal = _Journal(work / "rows.jsonl")
        if journal.done:
            log.info("Resuming %s: %d of %d photos already done", work, len(journal.done), len(photos))
        target = torch.device(resolve_device(s.device))
        identities = work / "autoencoders.json"  # each autoencoder's identity, once it has been loaded
        loaded = json.loads(identities.read_text()) if identities.is_file() else {}
        for spec in dict.fromkeys(p.autoencoder for p in photos):
            mine = [p for p in photos if p.autoencoder == spec]
            if all(p.relpath in journal.done for p in mine):
                continue
            ae = load_autoencoder(spec).to(target)
            loaded[ae.name] = {"autoencoder": spec, **ae.identity}
            identities.write_text(json.dumps(loaded, indent=2) + "\n")
            reconstruct_all(mine, ae, work, journal, s, target)
        info = _finish(work, journal, job, loaded)
        replace_folder(work, out)
    log.info(
        "Wrote %d pairs to %s (%d file(s) skipped%s)",
        info["pairs"],
        out,
        info["skipped"],
        ", listed in skipped.csv" if info["skipped"] else "",
    )
    return info


def _finish(work: Path, journal: _Journal, job: dict[str, Any], loaded: dict[str, dict]) -> dict[str, Any]:
    """manifest.csv, skipped.csv and provenance.json from the journal; the work files go."""
    import csv

    pairs = sorted((r for r in journal.rows if "skipped" not in r), key=lambda r: r["real"])
    skipped = sorted((r for r in journal.rows if "skipped" in r), key=lambda r: r["source_file"])
    if not pairs:
        raise DatasetLayoutError(f"No usable photo in {job['real']}: all {len(skipped)} file(s) were skipped")
    with open(work / MANIFEST, "w", newline="") as f:
        writer = csv.DictWriter(f, MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(pairs)
    if skipped:
        with open(work / "skipped.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["source_file", "reason"])
            writer.writerows([r["source_file"], r["skipped"]] for r in skipped)
        for row in skipped:
            log.warning("Skipped %s: %s", Path(job["real"]) / row["source_file"], row["skipped"])
    psnr_of = defaultdict(list)
    for row in pairs:
        psnr_of[row["autoencoder"]].append(row["psnr_db"])
    info = {
        "source": "aligned",
        **{k: v for k, v in job.items() if k != "photos_sha256"},
        "pairs": len(pairs),
        "skipped": len(skipped),
        "autoencoders": {
            name: {
                "pairs": len(values),
                "mean_psnr_db": round(float(np.mean(values)), 3),
                **loaded.get(name, {}),
            }
            for name, values in psnr_of.items()
        },
    }
    write_provenance(work, info)
    for name in ("rows.jsonl", "job.json", "autoencoders.json"):
        (work / name).unlink(missing_ok=True)
    return info
