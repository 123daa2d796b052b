"""``hemacnn sweep``: a study file -> checked points -> run folders (via the runner) -> summary."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import yaml

from hemacnn.atomic import write_json
from hemacnn.config import dump_config
from hemacnn.errors import HemacnnError
from hemacnn.rundir import RunDir
from hemacnn.studies.pipeline import StudyPlan, run_plan
from hemacnn.studies.runner import GRACE_S
from hemacnn.studies.spec import (
    DEFAULT_PROFILE,
    Point,
    StudySpec,
    claims_of,
    expand_points,
    load_study,
    seeds_of,
    summary_params,
)
from hemacnn.studies.summary import applies, dotted_value, shared_runs, write_summary

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
        if p.shared:  # its runs are the other study's (every seed it has), read at report time
            if p.seed == 0:
                entry.update(shared=p.shared, config=_config_tree(p))
            continue
        entry["runs"].append({"name": p.name, "seed": p.config.seed})
    return {
        "format": "hemacnn-study/1",
        "study": spec.study, "title": spec.title, "profile": profile,
        "profile_note": profile_note(spec, profile, overrides),
        "study_file": spec.path, "overrides": list(overrides),
        "points": list(grouped.values()),
        "columns": spec.columns, "summary": summary_params(spec, profile),
        "figures": spec.figures, "paper": spec.paper, "notes": spec.notes,
        "claims": [c.model_dump(exclude_none=True, exclude_defaults=True)
                   for c in claims_of(spec, profile)],
        "settings": spec.settings,
        "paper_settings": paper_settings(spec, overrides),
    }


def _config_tree(p: Point) -> dict:
    return yaml.safe_load(dump_config(p.config))


def paper_settings(spec: StudySpec, overrides: list[str]) -> dict[str, dict]:
    """Point -> the study's ``settings`` keys under the paper profile (what each claim row
    shows beside the settings actually run); empty when the study names no settings."""
    if not spec.settings:
        return {}
    try:
        points = expand_points(spec, DEFAULT_PROFILE, overrides, seeds=1)
    except HemacnnError:  # an override the paper profile varies: no paper column then
        return {}
    out = {}
    for p in points:
        tree = _config_tree(p)
        out[p.name] = {k: dotted_value(tree, k) for k in spec.settings if applies(tree, k)}
    return out


def check_shared(points: list[Point], out: Path) -> None:
    """Every shared point's runs exist in the other study's folder beside ``out`` and were
    trained with this point's config (all but the run name and seeds); one error otherwise."""
    for p in points:
        if p.shared and p.seed == 0:
            shared_runs(out, {"name": p.point, "shared": p.shared, "config": _config_tree(p)})


def one_seed_warning(claims: int) -> str:
    """What one seed per point cannot do, said before anything trains."""
    what = (f"none of this study's claims ({claims}) can be decided: each will be inconclusive"
            if claims else "no difference between points can be told from seed noise")
    return (f"note: one seed per point gives no interval over seeds, so {what}; "
            f"run --seeds 3 or more {'to decide them' if claims else 'for intervals'}")


def profile_note(spec: StudySpec, profile: str, overrides: list[str]) -> str:
    """The profile's note, unless the command line overrides what the note describes (the
    classes or the data): then the note would describe another task, so it says that instead."""
    prof = spec.profiles.get(profile)
    if not prof or not prof.note:
        return ""
    keys = sorted({o.split("=", 1)[0].strip() for o in overrides} & NOTE_KEYS)
    if keys:
        return (f"the study file's note for this profile is not shown, because the command "
                f"line sets {', '.join(keys)} and the note describes the profile's own data.")
    return prof.note


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
    out = Path(out) if out else Path("studies") / f"{spec.study}-{profile}"
    record = study_record(spec, profile, points, overrides or [])
    record["command"] = command
    check_shared(points, out)
    notes = ((one_seed_warning(len(claims_of(spec, profile))),)
             if seeds_of(spec, profile, seeds) < 2 else ())
    own = [p for p in points if not p.shared]  # a shared point's runs are another study's
    plan = StudyPlan(f"{spec.study}-{profile}", _base(spec), own, STUDY_JSON, record,
                     describe=_describe, notes=notes)
    if run_plan(plan, out, workers=workers, storage=storage, progress=progress,
                grace_s=grace_s, echo=echo):
        for path in write_summary(out):
            echo(f"wrote {path}")
    return out


def _describe(record: dict) -> str:
    return f"study {record.get('study')} (profile {record.get('profile')})"


def _base(spec: StudySpec) -> str:
    return str(Path(spec.path).parent / spec.base)


def sweep_report(out: str | os.PathLike, study_file: str | os.PathLike | None = None,
                 echo: Callable[[str], None] = print) -> list[Path]:
    """Re-write DIR's summary.csv, summary.md and figures from its run folders alone.

    With ``study_file``, first re-read what the study file says about the analysis (claims,
    columns, summary settings, the paper's figures, notes, settings, shared points) into
    DIR/study.json, under the profile and overrides recorded there; each point keeps the runs
    the folder's record lists (nothing is trained)."""
    out = Path(out)
    if not (out / STUDY_JSON).is_file():
        raise HemacnnError(f"{out} is not a study folder (no {STUDY_JSON}); give the --out "
                           "folder of a `hemacnn sweep`")
    if study_file is not None:
        refresh_record(out, study_file)
        echo(f"wrote {out / STUDY_JSON}")
    paths = write_summary(out)
    for path in paths:
        echo(f"wrote {path}")
    return paths


def _ran_config(out: Path, point: dict) -> dict | None:
    """The config of a point's first own run in ``out`` (None when it has none)."""
    for run in [] if point.get("shared") else point.get("runs", []):
        path = RunDir(out / "runs" / run["name"]).config
        if path.is_file():
            return yaml.safe_load(path.read_text(encoding="utf-8"))
    return None


def refresh_record(out: Path, study_file: str | os.PathLike) -> dict:
    """DIR/study.json re-derived from ``study_file`` (see :func:`sweep_report`)."""
    old = json.loads((out / STUDY_JSON).read_text(encoding="utf-8"))
    spec = load_study(study_file)
    if spec.study != old.get("study"):
        raise HemacnnError(f"{out} holds study {old.get('study')!r}, not {spec.study!r} of "
                           f"{study_file}")
    overrides = list(old.get("overrides", []))
    points = expand_points(spec, old["profile"], overrides)
    record = study_record(spec, old["profile"], points, overrides)
    record["command"] = old.get("command", "")  # how the folder was made, as it recorded
    record["study_file"] = old.get("study_file", record["study_file"])
    had = {p["name"]: p for p in old["points"]}
    for p in record["points"]:
        before = had.get(p["name"], {})
        if not p.get("shared") and "runs" in before and not before.get("shared"):
            p["runs"] = before["runs"]
        elif p.get("shared"):  # the config the folder ran this point with, where it shows one
            p["config"] = _ran_config(out, before) or before.get("config") or p["config"]
    write_json(out / STUDY_JSON, record)
    return record
