"""The package reads as the pipeline: layers that only import downwards, and no circles. Every import counts, at
the top of a module or inside a function (docs/architecture.md draws the layers)."""

from __future__ import annotations

import ast
import graphlib

import pytest

from .conftest import REPO

SRC = REPO / "src"

# Lowest first; a module may import its own layer (without a circle) and the layers below it, never above.
LAYERS = (
    # leaves: the metric registry, config glue, settings checks, errors, noise filters, the table writer
    ("metric_registry", "config", "errors", "target_check", "quiet", "tables"),
    ("data",),  # finding, fingerprinting, splitting and loading images
    ("metrics",),  # numbers from predictions: metrics, intervals, paired tests
    ("model",),  # the LightningModule and its backbones
    ("detector",),  # a checkpoint turned into answers: loading, scoring files, the predictions format
    (
        "training",
        "callbacks",
        "ddp",
        "sweeps",
        "evaluation",
        "prediction",
        "serving",
        "export",
        "generalization",
        "cli",
    ),  # commands
)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in its text)."""
    files = {}
    for path in (SRC / "trustthepixels").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        files[name] = path
    graph = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """A circle of imports, as graphlib finds one, or none."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        return [sorted(set(err.args[1]))]
    return []


def test_the_import_graph_has_no_circles():
    graph = import_graph()
    assert len(graph) > 40  # the package was found
    assert circles(graph) == []


def layer_of(module: str) -> int:
    if module == "trustthepixels":
        return 0
    part = module.split(".")[1]
    return next(i for i, names in enumerate(LAYERS) if part in names)


def test_every_module_has_a_layer_and_imports_only_downwards():
    graph = import_graph()
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a)]
    assert upward == []


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_each_setting_is_declared_once():
    """A group's or command's YAML restates no default of its schema: the schema's field is the one declaration of
    a setting (its type, default and what it takes), and the YAML holds only what follows the run or differs."""
    import yaml
    from omegaconf import OmegaConf

    import hydra_plugins.trustthepixels.schemas as schemas
    from trustthepixels.config import _SCHEMAS

    commands = {"eval": schemas.EvalSettings, "compare": schemas.CompareSettings, "predict": schemas.PredictSettings}
    commands |= {"calibrate": schemas.CalibrateSettings, "export": schemas.ExportSettings}
    commands |= {"serve": schemas.ServeSettings, "prepare_data": schemas.PrepareSettings}
    commands |= {"audit_data": schemas.AuditSettings}
    files = {REPO / "configs" / f"{name}.yaml": schema for name, schema in commands.items()}
    files |= {
        path: _SCHEMAS[group] for group in ("data", "abstain") for path in (REPO / "configs" / group).glob("*.yaml")
    }
    files |= {path: _SCHEMAS["model"] for path in (REPO / "configs" / "model").rglob("*.yaml")}

    def restated(values: dict, defaults: dict, prefix: str = "") -> list[str]:
        found = []
        for key, value in values.items():
            if key in ("defaults", "task_name") or key not in defaults:
                continue
            if isinstance(value, dict) and isinstance(defaults[key], dict) and value != defaults[key]:
                found += restated(value, defaults[key], f"{prefix}{key}.")
            elif value == defaults[key]:
                found.append(f"{prefix}{key}")
        return found

    assert len(files) > 15
    for path, schema in files.items():
        defaults = OmegaConf.to_container(OmegaConf.structured(schema))
        values = yaml.safe_load(path.read_text()) or {}
        assert not restated(values, defaults), f"{path.relative_to(REPO)} restates its schema's defaults"


def test_the_settings_reference_is_current(tmp_path):
    """docs/settings.md is what `python docs/settings_reference.py` writes from the schemas today (run as documented,
    into a scratch file)."""
    import subprocess
    import sys

    written = tmp_path / "settings.md"
    subprocess.run([sys.executable, "docs/settings_reference.py", f"--out={written}"], cwd=REPO, check=True)
    expected = written.read_text()
    assert "| `data.split` | `[0.8, 0.1, 0.1]` |" in expected and "| `ckpt_path` | required |" in expected
    assert (REPO / "docs" / "settings.md").read_text() == expected, "run: python docs/settings_reference.py"


def test_parts_built_from_python_take_the_defaults_train_py_composes(make_cfg):
    """The DataModule, the module and prepare_data's real_split, built in Python with nothing but what a run must
    name, hold the composed config's values: no second set of defaults (their signatures had four that differed)."""
    import dataclasses

    from trustthepixels.config import to_plain, validated
    from trustthepixels.data.ingest.settings import PrepareSettings
    from trustthepixels.data.loading.datamodule import ImageFolderDataModule
    from trustthepixels.model.module import DetectorModule

    cfg = to_plain(make_cfg("model=resnet18", "model.pretrained=false"))
    wired = {"root", "batch_size", "seed", "cache_dir", "output_dir"}  # data/default.yaml ties them to the run
    data = dataclasses.asdict(ImageFolderDataModule(cfg["data"]["root"], {"input_size": (3, 32, 32)}).settings)
    assert {k: v for k, v in data.items() if k not in wired} == {k: v for k, v in cfg["data"].items() if k not in wired}
    module = DetectorModule("resnet18", pretrained=False)
    assert {k: module.hparams[k] for k in cfg["model"] if not k.startswith("_")} == {
        k: v for k, v in cfg["model"].items() if not k.startswith("_")
    }
    part = validated(PrepareSettings, {"source": "aligned", "real": ".", "real_part": "test"}, "")
    real_split = dataclasses.asdict(part.real_split)
    assert [*(real_split[k] for k in ("split", "calibration_share", "near_duplicates")), part.seed] == [
        cfg["data"][k] for k in ("split", "calibration_share", "near_duplicates", "seed")
    ]


def test_a_report_template_leaves_no_line_for_its_tags_and_refuses_a_name_it_is_not_given(tmp_path):
    import jinja2

    from trustthepixels.tables import render

    template = tmp_path / "report.md"
    template.write_text("# Report\n{% if shown %}\n{{ value }}\n{% endif %}\nend\n")
    assert render(template, shown=True, value=3) == "# Report\n3\nend\n"
    assert render(template, shown=False) == "# Report\nend\n"
    with pytest.raises(jinja2.UndefinedError):
        render(template, shown=True)
