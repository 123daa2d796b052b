"""The one pipeline every study runs through: ``hemacnn sweep`` and ``hemacnn cv`` alike.

A caller turns its input into a :class:`StudyPlan` (checked points and the record its folder
keeps); :func:`run_plan` checks the folder, records the study, runs the points through the
runner (skip finished, resume killed, share with other workers) and says whether all are done,
so the caller writes its own summary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hemacnn.atomic import check_creatable, ensure_writable_dir, write_json
from hemacnn.config import same_config
from hemacnn.data.scan import load_or_scan
from hemacnn.errors import HemacnnError
from hemacnn.rundir import RunDir
from hemacnn.studies.runner import GRACE_S, RunPoint, all_finished, run_dir_of, run_points
from hemacnn.studies.spec import Point


@dataclass
class StudyPlan:
    """A study ready to run: its points, the record its folder keeps, and how it reads."""

    name: str  # the study's name in the Optuna storage
    base: str  # the config file every point's overrides apply to
    points: list[Point]
    record_file: str  # the record's file name in the study folder
    record: dict[str, Any]
    describe: Callable[[dict[str, Any]], str]  # a record -> what the folder holds, in words
    unit: str = "point"  # what a point is called in messages
    report: str = "hemacnn sweep --report"  # the command that summarises later
    notes: tuple[str, ...] = ()  # printed before anything trains (after the count of points)


def check_folder(out: Path, plan: StudyPlan) -> None:
    """A study folder holds one study; a run folder must match its point's config."""
    old_path = out / plan.record_file
    if old_path.is_file():
        held = plan.describe(json.loads(old_path.read_text(encoding="utf-8")))
        if held != plan.describe(plan.record):
            raise HemacnnError(f"{out} holds {held}, not {plan.describe(plan.record)}; "
                               "choose another --out")
    for p in plan.points:
        saved = RunDir(run_dir_of(out, p.name)).config
        if saved.is_file() and not same_config(saved.read_text(encoding="utf-8"), p.config):
            raise HemacnnError(f"{saved.parent} was trained with a different config than "
                               f"{plan.unit} {p.name} has now (config, study file or overrides "
                               "changed); choose another --out or remove that run folder")


def check_classes(plan: StudyPlan) -> None:
    """Every class a point selects is in its data root: one error before anything trains
    (a study names the classes of the data it was made for, which other data may lack)."""
    seen: dict[str, set[str]] = {}
    for p in plan.points:
        d = p.config.data
        if d.classes == "all":
            continue
        if d.root not in seen:
            seen[d.root] = {e.label for e in load_or_scan(d.root, progress=False) if e.usable}
        missing = [c for c in d.classes if c not in seen[d.root]]
        if missing:
            present = sorted(seen[d.root])
            raise HemacnnError(
                f"{plan.describe(plan.record)} trains on classes "
                f"{', '.join(d.classes)}, but {d.root} has no usable image of "
                f"{', '.join(missing)} (classes there: {', '.join(present) or 'none'}); choose "
                f"classes it has, e.g. data.classes=[{','.join(present[:4])}]"
                + (" data.offline_rotate=[]" if d.offline_rotate else ""))


def run_plan(plan: StudyPlan, out: Path, *, workers: int = 1, storage: str | None = None,
             progress: bool = True, grace_s: int = GRACE_S,
             echo: Callable[[str], None] = print) -> bool:
    """Check and record the study in ``out``, run its unfinished points; True when every
    point's run folder is finished here (so the caller can summarise)."""
    if any(p.config.data.root is None for p in plan.points):
        raise HemacnnError("data.root is not set; pass data.root=/path/to/BM_cytomorphology_data")
    check_creatable(out)
    check_folder(out, plan)
    check_classes(plan)  # scans the data root: after the cheap checks
    ensure_writable_dir(out / "runs")
    write_json(out / plan.record_file, plan.record)
    t0 = time.monotonic()
    result = run_points([RunPoint(p.name, plan.base, p.overrides,
                                  plan.record.get("command", "")) for p in plan.points], out,
                        plan.name, workers=workers, storage=storage, progress=progress,
                        grace_s=grace_s, echo=echo, notes=plan.notes)
    echo(f"this run: {len(result.trained)} trained, {len(result.resumed)} resumed, "
         f"{len(result.failed)} failed, {time.monotonic() - t0:.0f} s")
    return all_finished(result, plan.points, out, plan.unit, plan.report, echo)
