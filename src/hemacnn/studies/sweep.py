"""``hemacnn sweep``: a study file -> checked points -> run folders (via the runner) -> summary."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from hemacnn.atomic import check_creatable, ensure_writable_dir, write_json
from hemacnn.config import dump_config
from hemacnn.errors import HemacnnError
from hemacnn.rundir import RunDir
from hemacnn.studies.runner import GRACE_S, RunPoint, all_finished, run_dir_of, run_points
from hemacnn.studies.spec import (
    DEFAULT_PROFILE,
    Point,
    StudySpec,
    claims_of,
    expand_points,
    load_study,
    summary_params,
)
from hemacnn.studies.summary import write_summary

STUDY_JSON = "study.json"
# Overrides that change what a profile's note describes (its classes and image counts).
NOTE_KEYS = {"data.classes", "data.offline_rotate", "data.train_fraction", "data.test_fraction",
             "data.val_fraction", "data.rare_classes"}


def study_record(spec: StudySpec, profile: str, points: list[Point],
                 overrides: list[str]) -> dict:
    """What ``sweep --report`` needs besides the run folders (saved as DIR/study.json)."""
    grouped: dict[str, dict] = {}
    for p in points:
        entry = grouped.setdefault(p.point, {"name": p.point, "values": p.values, "runs": []})
        entry["runs"].append({"name": p.name, "seed": p.config.seed})
    return {
        "format": "hemacnn-study/1",
        "study": spec.study, "title": spec.title, "profile": profile,
        "profile_note": profile_note(spec, profile, overrides),
        "study_file": spec.path, "overrides": list(overrides),
        "points": list(grouped.values()),
        "columns": spec.columns, "summary": summary_params(spec, profile),
        "figures": spec.figures, "paper": spec.paper, "notes": spec.notes,
        "claims": [c.model_dump(exclude_none=True) for c in claims_of(spec, profile)],
    }


def profile_note(spec: StudySpec, profile: str, overrides: list[str]) -> str:
    """The profile's note, unless the command line overrides what the note describes (the
    classes or the data): then the note would describe another task, so it says that instead."""
    prof = spec.profiles.get(profile)
    if not prof or not prof.note:
        return ""
    keys = sorted({o.split("=", 1)[0].strip() for o in overrides} & NOTE_KEYS)
    if keys:
        return (f"(this profile's note does not apply: {', '.join(keys)} overridden on the "
                "command line; see the study file for the profile's own setting)")
    return prof.note


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
        saved = RunDir(run_dir_of(out, p.name)).config
        if saved.is_file() and saved.read_text(encoding="utf-8") != dump_config(p.config):
            raise HemacnnError(f"{saved.parent} was trained with a different config than point "
                               f"{p.name} has now (study file or overrides changed); "
                               "choose another --out or remove that run folder")


def run_study(study_file: str | os.PathLike, out: str | os.PathLike | None = None,
              profile: str = DEFAULT_PROFILE, overrides: list[str] | None = None,
              workers: int = 1, storage: str | None = None, progress: bool = True,
              seeds: int | None = None, grace_s: int = GRACE_S, command: str = "",
              echo: Callable[[str], None] = print) -> Path:
    """Run (or finish) a study and write its summary; returns the study folder.

    ``seeds`` (default: the study file's) trains every point under that many seeds;
    ``command`` is the command line to record (the caller's; the library never reads argv).
    """
    spec = load_study(study_file)
    points = expand_points(spec, profile, overrides, seeds)  # all checked before any run
    if any(p.config.data.root is None for p in points):
        raise HemacnnError("data.root is not set; pass data.root=/path/to/BM_cytomorphology_data")
    out = Path(out) if out else Path("studies") / f"{spec.study}-{profile}"
    record = study_record(spec, profile, points, overrides or [])
    record["command"] = command
    check_creatable(out)
    _check_folder(out, record, points)
    check_classes(spec, profile, points)  # scans the data root: after the cheap checks
    ensure_writable_dir(out / "runs")
    write_json(out / STUDY_JSON, record)
    t0 = time.monotonic()
    result = run_points([RunPoint(p.name, _base(spec), p.overrides) for p in points], out,
                        f"{spec.study}-{profile}", workers=workers, storage=storage,
                        progress=progress, grace_s=grace_s, echo=echo)
    echo(f"this run: {len(result.trained)} trained, {len(result.resumed)} resumed, "
         f"{len(result.failed)} failed, {time.monotonic() - t0:.0f} s")
    if not all_finished(result, points, out, "point", "hemacnn sweep --report", echo):
        return out
    for path in write_summary(out):
        echo(f"wrote {path}")
    return out


def check_classes(spec: StudySpec, profile: str, points: list[Point]) -> None:
    """Every class a point selects is in its data root: one error before anything trains
    (a profile names the classes of the data it was made for, which other data may lack)."""
    from hemacnn.data.scan import load_or_scan

    seen: dict[str, set[str]] = {}
    for p in points:
        d = p.config.data
        if d.classes == "all":
            continue
        if d.root not in seen:
            seen[d.root] = {e.label for e in load_or_scan(d.root, progress=False) if e.usable}
        missing = [c for c in d.classes if c not in seen[d.root]]
        if missing:
            present = sorted(seen[d.root])
            raise HemacnnError(
                f"study {spec.study} (profile {profile}) trains on classes "
                f"{', '.join(d.classes)}, but {d.root} has no usable image of "
                f"{', '.join(missing)} (classes there: {', '.join(present) or 'none'}); choose "
                f"classes it has, e.g. data.classes=[{','.join(present[:4])}]"
                + (" data.offline_rotate=[]" if d.offline_rotate else ""))


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
