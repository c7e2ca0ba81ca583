"""`prepare_data.py`'s settings as a structured config (configs/prepare_data.yaml says what each does): types checked
as the config composes, the fields' rules (and the checksum's below) before anything is downloaded or written."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from trustthepixels.config import CommandSettings, refusal, register_schema, setting


@dataclass
class PrepareSettings(CommandSettings):
    source: str = setting(
        "release (the published dataset.zip) or hf (rebuilt from the Hugging Face dataset)", choices=("release", "hf")
    )
    out: str = setting("the folder to write AI/ and Real/ into")
    overwrite: bool = setting("true (replace a non-empty out) or false")
    url: str = setting("the URL of a dataset.zip")
    sha256: Optional[str] = setting("the zip's SHA-256 (64 hexadecimal digits), or null")  # noqa: UP045
    keep_archive: bool = setting("true or false")
    dataset: str = setting("a Hugging Face dataset name or a local dataset folder")
    split: str = setting("a split of that dataset, e.g. train")
    per_class: int = setting("a number of images per class, 1 or more", low=1)
    seed: int = setting("a whole number")
    label_column: str = setting("the dataset's label column")
    image_column: str = setting("the dataset's image column")
    ai_label_name: str = setting("the name of the AI-generated class in the label column, e.g. AiArtData")
    real_label_name: str = setting("the name of the real class in the label column, e.g. RealArt")
    workers: Optional[int] = setting(  # noqa: UP045
        "a number of threads, 1 or more, or null for two per core (at most 16)", low=1
    )


def check_prepare_settings(s: PrepareSettings) -> None:
    if s.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", s.sha256):
        raise refusal(PrepareSettings, "sha256", s.sha256)


register_schema(None, PrepareSettings, check_prepare_settings, name="prepare_data_schema")
