"""benchmarks/vs_lightning.py without its Lightning virtualenv: the figures it reports from
each side's results, the training both sides are given, and that the Lightning side needs
nothing beyond what constraints-lightning.txt installs. make test does not create
.venv-lightning, so nothing here runs Lightning."""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from benchmark_scripts import BENCHMARKS, load_benchmark

from visionops.config import warmup_epochs_for
from visionops.data.transforms import build_transform
from visionops.recipes import get_recipe

ROOT = Path(__file__).resolve().parents[2]


vs_lightning = load_benchmark("vs_lightning")


def side(step_rates: list[float], end_to_end: float, accuracy: float) -> dict[str, object]:
    return {
        "per_step_images_per_sec": step_rates,
        "end_to_end_images_per_sec": end_to_end,
        "val_accuracy": accuracy,
    }


def test_summary_takes_medians_of_repeats_and_divides_visionops_by_lightning() -> None:
    repeats = {
        "lightning": [
            side([100, 90, 300], 50, 0.8),
            side([80, 100, 120], 40, 0.7),
            side([1], 5, 0.9),
        ],
        "visionops": [
            side([200, 180], 75, 0.85),
            side([150], 60, 0.8),
            side([400, 10, 410], 80, 0.1),
        ],
    }

    summary = vs_lightning.summarise(repeats)

    # Per step: the median over each run's steps, then over runs.
    assert summary["runs"]["per_step"] == {"lightning": [100, 100, 1], "visionops": [190, 150, 400]}
    assert summary["per_step"] == {
        "lightning_images_per_sec": 100,
        "visionops_images_per_sec": 190,
        "ratio": 1.9,
    }
    assert summary["end_to_end"] == {
        "lightning_images_per_sec": 40,
        "visionops_images_per_sec": 75,
        "ratio": 1.875,
    }
    assert summary["val_accuracy"] == {"lightning": 0.8, "visionops": 0.8}


def test_the_lightning_sides_result_is_its_last_line_of_output() -> None:
    result = {"val_accuracy": 0.5, "per_step_images_per_sec": [1.0]}
    stdout = "a warning someone printed\n" + json.dumps(result) + "\n\n"

    assert vs_lightning.parse_side_output(stdout) == result
    with pytest.raises(RuntimeError, match="printed nothing"):
        vs_lightning.parse_side_output("\n")


def arguments(**overrides: object) -> argparse.Namespace:
    values = {
        "synthetic": True,
        "images": 300,
        "data_dir": "unused",
        "epochs": 2,
        "precision": "fp32",
        "batch_size": 64,
        "loader": "classic",
        "num_workers": 0,
        "model": "airbench",
        "width": 0.5,
    }
    return argparse.Namespace(**(values | overrides))


def test_both_sides_get_the_recipes_optimizer_with_per_image_augmentation(tmp_path: Path) -> None:
    cfg = vs_lightning.make_config(arguments(), tmp_path)
    recipe = get_recipe("cifar10-fast")

    # The Lightning side's DataLoader runs the per-image transform: every augmentation has one.
    transform = build_transform(cfg.data, 32)
    assert len(transform.transforms) > len(build_transform(None, 32).transforms)
    assert cfg.data.tta == "none"
    assert cfg.tracking.log_every_n_steps == 1
    assert cfg.optim.lr == recipe.optim.lr
    assert cfg.optim.norm_lr_scale == recipe.optim.norm_lr_scale
    # Warm-up keeps the recipe's share of the schedule.
    assert recipe.optim.warmup_fraction is not None
    assert warmup_epochs_for(cfg.optim, cfg.epochs) == pytest.approx(
        recipe.optim.warmup_fraction * 2
    )
    dataset = vs_lightning.make_config(arguments(synthetic=False, data_dir="imgs"), tmp_path).data
    assert (dataset.dataset, str(dataset.data_dir)) == ("imagefolder", "imgs")


def test_the_lightning_side_imports_only_what_its_virtualenv_installs() -> None:
    """The distributions imported at module level by the Lightning side and by every
    visionops module it loads (model, data, optimizer and what they pull in) are pinned in
    constraints-lightning.txt: an import added to those modules cannot break
    make bench-lightning unnoticed. Imports inside functions are left out: they run only
    when called, and optional ones (torch's, MLflow's) are guarded by their libraries."""
    side = BENCHMARKS / "lightning_side.py"
    visionops_modules = sorted(
        name for name in module_imports(side) if name.split(".")[0] == "visionops"
    )
    script = (
        "import importlib, json, sys\n"
        f"for name in {visionops_modules!r}: importlib.import_module(name)\n"
        "files = [m.__file__ for n, m in list(sys.modules.items())\n"
        "         if n.split('.')[0] == 'visionops' and getattr(m, '__file__', None)]\n"
        "print(json.dumps(sorted(files)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, cwd=ROOT
    )
    files = [side, *map(Path, json.loads(done.stdout.splitlines()[-1]))]
    distributions = packages_distributions()
    needed = {
        canonical(dist)
        for file in files
        for name in module_imports(file)
        if (top := name.split(".")[0]) not in sys.stdlib_module_names and top != "visionops"
        for dist in distributions.get(top, [top])
    }
    pinned = {
        canonical(line.split("==")[0])
        for line in (ROOT / "constraints-lightning.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }

    assert len(files) > 10  # the visionops modules were found
    assert {"lightning", "torch", "torchvision", "mlflow"} <= needed
    assert needed - pinned == set()


def module_imports(path: Path) -> set[str]:
    """The absolute imports a module runs when it is loaded (outside functions and classes;
    ``if TYPE_CHECKING:`` blocks, which never run, left out)."""
    names: set[str] = set()
    pending = list(ast.parse(path.read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            pending.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body)
    return names


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
