"""``hemacnn demo``: the whole job (scan, train, evaluate, report) on a sample shipped inside the
package, so a fresh install runs it with no download and no path to type.

The sample (``demo/data``, 135 real Matek images, CC BY 4.0; see its README) and the quick
model's config (``demo/demo.yaml``) travel as package data. The same library functions run on
the user's own data root: ``hemacnn scan/train/evaluate/report``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hemacnn.data.manifest import write_manifest
from hemacnn.data.scan import default_manifest_path, scan_dataset, scan_report_text
from hemacnn.evaluation.evaluate import evaluate_run, format_evaluation
from hemacnn.evaluation.report import write_report
from hemacnn.rundir import RunDir
from hemacnn.training.train import train


def sample_root() -> Path:
    """The folder of the shipped demo images (one sub-folder per class)."""
    return Path(str(resources.files("hemacnn.demo") / "data"))


def demo_config() -> Path:
    """The shipped config of the quick model for the demo."""
    return Path(str(resources.files("hemacnn.demo") / "demo.yaml"))


@dataclass
class DemoResult:
    """What the demo produced: the run folder, its report and the test metrics."""

    run_dir: Path
    report: Path
    metrics: dict


def run_demo(out: str | os.PathLike | None = None, overrides: list[str] | None = None,
             progress: bool = True, say: Callable[[str], None] = print,
             command: str = "") -> DemoResult:
    """Scan the shipped sample, train the quick model, evaluate it and write the report."""
    root = sample_root()
    say(f"== 1/4 scan: the demo sample shipped with hemacnn ({root})")
    scan = scan_dataset(root, progress=progress)
    manifest = default_manifest_path(scan.root)
    write_manifest(scan.entries, manifest)
    say(scan_report_text(scan, manifest_path=manifest))
    say("\n== 2/4 train: the quick model (quarter-width MV3, 64 px, bf16)")
    run_dir = train(demo_config(), overrides=[f"data.root={root}", *(overrides or [])], out=out,
                    progress=progress, command=command)
    say(f"\n== 3/4 evaluate: the best checkpoint on the held-out test split of {run_dir}")
    metrics = evaluate_run(run_dir)
    say(format_evaluation(metrics))
    say("\n== 4/4 report")
    md, html = write_report([run_dir])
    say(f"report: {html}\n        {md}\nrun folder: {run_dir}")
    say("Next: the same commands on your own data, e.g. "
        "`hemacnn train configs/quick.yaml data.root=/path/to/BM_cytomorphology_data`.")
    return DemoResult(run_dir, html, json.loads(RunDir(run_dir).test_metrics.read_text()))
