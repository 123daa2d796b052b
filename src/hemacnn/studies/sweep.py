"""``hemacnn sweep``: a study file -> checked points -> run folders (via the runner) -> summary."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hemacnn.atomic import check_creatable, ensure_writable_dir, write_json
from hemacnn.config import dump_config
from hemacnn.errors import HemacnnError
from hemacnn.studies.runner import RunPoint, all_finished, run_dir_of, run_points
from hemacnn.studies.spec import (
    DEFAULT_PROFILE,
    Point,
    StudySpec,
    expand_points,
    load_study,
    summary_params,
)
from hemacnn.studies.summary import write_summary

STUDY_JSON = "study.json"


def study_record(spec: StudySpec, profile: str, points: list[Point],
                 overrides: list[str]) -> dict:
    """What ``sweep --report`` needs besides the run folders (saved as DIR/study.json)."""
    prof = spec.profiles.get(profile)
    return {
        "format": "hemacnn-study/1",
        "study": spec.study, "title": spec.title, "profile": profile,
        "profile_note": prof.note if prof else "",
        "study_file": spec.path, "overrides": list(overrides),
        "points": [{"name": p.name, "values": p.values} for p in points],
        "columns": spec.columns, "summary": summary_params(spec, profile),
        "figures": spec.figures, "paper": spec.paper, "notes": spec.notes,
    }


def _check_folder(out: Path, record: dict, points: list[Point]) -> None:
    """A study folder holds one study and profile; a run folder must match its point's config."""
    old_path = out / STUDY_JSON
    if old_path.is_file():
        old = json.loads(old_path.read_text(encoding="utf-8"))
        if (old.get("study"), old.get("profile")) != (record["study"], record["profile"]):
            raise HemacnnError(f"{out} holds study {old.get('study')} (profile "
                               f"{old.get('profile')}), not {record['study']} (profile "
                               f"{record['profile']}); choose another --out")
    for p in points:
        saved = run_dir_of(out, p.name) / "config.yaml"
        if saved.is_file() and saved.read_text(encoding="utf-8") != dump_config(p.config):
            raise HemacnnError(f"{saved.parent} was trained with a different config than point "
                               f"{p.name} has now (study file or overrides changed); "
                               "choose another --out or remove that run folder")


def run_study(study_file: str | os.PathLike, out: str | os.PathLike | None = None,
              profile: str = DEFAULT_PROFILE, overrides: list[str] | None = None,
              workers: int = 1, storage: str | None = None, progress: bool = True,
              echo: Callable[[str], None] = print) -> Path:
    """Run (or finish) a study and write its summary; returns the study folder."""
    spec = load_study(study_file)
    points = expand_points(spec, profile, overrides)  # every point checked before any run
    if any(p.config.data.root is None for p in points):
        raise HemacnnError("data.root is not set; pass data.root=/path/to/BM_cytomorphology_data")
    out = Path(out) if out else Path("studies") / f"{spec.study}-{profile}"
    record = study_record(spec, profile, points, overrides or [])
    record["command"] = "hemacnn sweep " + " ".join(sys.argv[2:]) if sys.argv[1:2] == [
        "sweep"] else ""
    check_creatable(out)
    _check_folder(out, record, points)
    ensure_writable_dir(out / "runs")
    write_json(out / STUDY_JSON, record)
    t0 = time.monotonic()
    result = run_points([RunPoint(p.name, _base(spec), p.overrides) for p in points], out,
                        f"{spec.study}-{profile}", workers=workers, storage=storage,
                        progress=progress, echo=echo)
    echo(f"this run: {len(result.trained)} trained, {len(result.resumed)} resumed, "
         f"{len(result.failed)} failed, {time.monotonic() - t0:.0f} s")
    if not all_finished(result, points, out, "point", "hemacnn sweep --report", echo):
        return out
    for path in write_summary(out):
        echo(f"wrote {path}")
    return out


def _base(spec: StudySpec) -> str:
    return str(Path(spec.path).parent / spec.base)


def sweep_report(out: str | os.PathLike, echo: Callable[[str], None] = print) -> list[Path]:
    """Re-write DIR's summary.csv, summary.md and figures from its run folders alone."""
    out = Path(out)
    if not (out / STUDY_JSON).is_file():
        raise HemacnnError(f"{out} is not a study folder (no {STUDY_JSON}); give the --out "
                           "folder of a `hemacnn sweep`")
    paths = write_summary(out)
    for path in paths:
        echo(f"wrote {path}")
    return paths
