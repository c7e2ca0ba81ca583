"""The one decode gate every file passes (data/ingest/decode.py): the accepted formats only, and whatever a
decoder raises on a broken or crafted file is that file's named reason, in the library and in every command."""

from __future__ import annotations

import io
import random
import struct
import subprocess
import sys

import pytest
from PIL import Image

from trustthepixels.data.ingest.decode import ACCEPTED_FORMATS, REASON_CODES, ImageDecodeError, decode_image

from .conftest import REPO, TINY, write_image_folder

MUTATIONS_PER_FORMAT = 1000  # 6,000 mutated files in all


def crafted_dds() -> bytes:
    """A 16x16 DDS whose header claims pixel format flags 0x400000: Pillow's DDS parser raises NotImplementedError."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "DDS")
    data = bytearray(buffer.getvalue())
    data[80:84] = struct.pack("<I", 0x400000)
    return bytes(data)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One seeded mutation of a file's bytes, of the kinds fuzzers find decoder bugs with: flipped bits, a header
    byte set to an extreme, a cut, a repeated or dropped run, random bytes spliced in."""
    data = bytearray(data)
    kind = rng.randrange(6)
    at = rng.randrange(len(data))
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == 1:
        i = rng.randrange(min(len(data), 64))  # the header: sizes, modes, offsets
        data[i] = rng.choice((0x00, 0x7F, 0x80, 0xFF))
    elif kind == 2:
        del data[at:]
    elif kind == 3:
        run = data[at : at + rng.randint(1, 64)]
        data[at:at] = run * rng.randint(2, 16)
    elif kind == 4:
        del data[at : at + rng.randint(1, 64)]
    else:
        data[at:at] = rng.randbytes(rng.randint(1, 32))
    return bytes(data)


@pytest.fixture(scope="module")
def originals(shared_dir) -> dict[str, bytes]:
    """A real photo, small, written in every accepted format (GIF with a palette, TIFF compressed and not)."""
    photo = Image.open(sorted((shared_dir / "data" / "real-vs-ai" / "Real").iterdir())[0]).convert("RGB")
    photo.thumbnail((48, 48))
    files = {}
    for name in ACCEPTED_FORMATS:
        buffer = io.BytesIO()
        options = {"compression": "tiff_deflate"} if name == "TIFF" else {}
        photo.save(buffer, name, **options)
        files[name] = buffer.getvalue()
    return files


@pytest.mark.parametrize("name", ACCEPTED_FORMATS)
def test_mutated_files_of_every_accepted_format_decode_or_are_refused_with_a_reason(originals, name, tmp_path):
    rng = random.Random(f"gate-{name}")
    path = tmp_path / "fuzzed"
    outcomes = {"decoded": 0}
    for _ in range(MUTATIONS_PER_FORMAT):
        path.write_bytes(mutate(originals[name], rng))
        try:
            image, _ = decode_image(path)
        except ImageDecodeError as error:  # anything else escaping the gate fails the test
            assert error.code in REASON_CODES, (error.code, str(error))
            assert str(path) in str(error)
            outcomes[error.code] = outcomes.get(error.code, 0) + 1
        else:
            assert image.mode == "RGB" and min(image.size) >= 1
            outcomes["decoded"] += 1
    assert sum(outcomes.values()) == MUTATIONS_PER_FORMAT
    assert len(outcomes) >= 2, outcomes  # the mutations reach both sides of the gate


def test_formats_outside_the_list_are_refused_by_name_without_their_parser(tmp_path):
    dds = tmp_path / "crafted.dds"
    dds.write_bytes(crafted_dds())
    with pytest.raises(ImageDecodeError) as refused:
        decode_image(dds)
    assert refused.value.code == "unsupported_format" and "DDS" in refused.value.reason
    for name, options in (("ICO", {}), ("TGA", {}), ("PPM", {})):  # formats Pillow reads, the project does not
        other = tmp_path / f"image.{name.lower()}"
        Image.new("RGB", (16, 16)).save(other, name, **options)
        with pytest.raises(ImageDecodeError, match=name):
            decode_image(other)


def test_decoding_an_open_file_works_as_a_path_does(tmp_path):
    path = write_image_folder(tmp_path / "d", per_class=1) / "AI" / "ai_0000.png"
    with path.open("rb") as file:
        from_file, _ = decode_image(file)
    assert from_file.tobytes() == decode_image(path)[0].tobytes()


@pytest.mark.slow
def test_a_crafted_file_is_listed_and_the_rest_used_in_predict_train_and_audit(trained_checkpoint, tmp_path):
    folder = write_image_folder(tmp_path / "data", per_class=8, size=40)
    (folder / "AI" / "crafted.dds").write_bytes(crafted_dds())
    logs = f"paths.log_dir={tmp_path / 'outputs'}"

    def command(script: str, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, str(REPO / script), *args, logs], cwd=tmp_path, capture_output=True,
                                text=True, timeout=600)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stdout + result.stderr
        return result

    command("predict.py", f"ckpt_path={trained_checkpoint}", f"input={folder}")
    (predictions,) = (tmp_path / "outputs").rglob("predictions.csv")
    rows = predictions.read_text().splitlines()
    assert len(rows) == 1 + 17 and sum("a DDS image" in r for r in rows) == 1
    command("train.py", f"data.root={folder}", *TINY, "debug=fdr")
    (skipped,) = (tmp_path / "outputs").rglob("skipped.csv")
    assert "crafted.dds" in skipped.read_text() and "DDS" in skipped.read_text()
    result = command("audit_data.py", f"data.root={folder}")
    assert "crafted.dds" in (result.stdout + "".join(p.read_text() for p in (tmp_path / "outputs").rglob("*.md")))
