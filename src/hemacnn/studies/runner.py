"""Run a study's points as ordinary run folders, scheduled through an Optuna study storage.

Why Optuna (and not Ray Tune): a study here is a fixed list of runs, each a whole ``train()``
that already checkpoints and resumes itself. Optuna gives exactly the shared bookkeeping that
needs, in a library rather than a cluster service: a storage that several processes or machines
share (SQLite in the study folder by default, any SQLAlchemy URL such as PostgreSQL via
``--storage``), a trial queue whose WAITING -> RUNNING change is atomic (the claim), heartbeats
that mark a dead worker's trial failed, and a grid sampler over the point names.

The work list is Optuna's trial queue: one WAITING trial per unfinished point. A worker pops a
trial (an atomic state change in the storage) and, before training, checks that no other trial
for the same point is RUNNING or COMPLETE; if one is, it prunes its own. Since every worker pops
before it checks, two workers can never both pass the check for one point, so each point trains
exactly once however many workers race (at worst both step back, and the point is queued again).
Dead workers: Optuna's heartbeat fails their trials after a grace period (``--grace``); a trial
whose worker ran on this machine and whose process is gone is failed at once, so a re-run resumes
it straight away from the run folder's last checkpoint. A worker with nothing left to claim waits
while other workers still run points, so a point whose worker dies is finished by a live one.

Deleted run folders: a COMPLETE trial counts only while its run folder is finished, when the
folder is one this worker can see. Each study folder holds a random ``.out_id`` that every trial
records; a worker whose study folder has the same id (the same folder, or the same shared disk)
retrains a point whose folder was deleted, while a worker on another machine with its own local
study folder trusts trials finished there.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import queue as queue_module
import shutil
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import torch
from optuna.trial import TrialState

from hemacnn.errors import HemacnnError, Interrupted
from hemacnn.rundir import RunDir, read_metrics
from hemacnn.training.train import train

HEARTBEAT_S = 20  # a live worker writes a heartbeat this often (less with a short grace)
GRACE_S = 120  # a RUNNING trial without a heartbeat for this long is failed (dead worker)
HOST = socket.gethostname()


@dataclass
class RunPoint:
    """What the runner needs of a point: a name, a base config file and its overrides (and
    the command line to record in its run folder)."""

    name: str
    base: str
    overrides: list[str]
    command: str = ""


@dataclass
class Outcome:
    """What one invocation did: points trained, resumed, failed (name -> error)."""

    trained: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unfinished: list[str] = field(default_factory=list)


def run_dir_of(out: Path, name: str) -> Path:
    """A point's run folder."""
    return Path(out) / "runs" / name


def is_finished(run_dir: Path) -> bool:
    """A run is finished when train() wrote its test metrics (its last step)."""
    return RunDir(run_dir).finished


def out_id(out: Path) -> str:
    """The random id of the study folder ``out`` (made on first use, never changed)."""
    path = Path(out) / ".out_id"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".out_id.{os.getpid()}.tmp")
        tmp.write_text(uuid.uuid4().hex + "\n")
        try:
            os.link(tmp, path)  # atomic and never overwrites: racing workers keep the first id
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def storage_url(out: Path, url: str | None) -> str:
    """The storage URL: ``url``, or an SQLite file in the study folder."""
    return url or f"sqlite:///{(Path(out) / 'study.db').resolve()}"


def heartbeat_of(grace_s: int) -> int:
    """The heartbeat interval for a grace period: several beats fit in one grace."""
    return max(1, min(HEARTBEAT_S, grace_s // 4))


def open_storage(url: str, grace_s: int = GRACE_S):
    """An Optuna RDB storage with heartbeats; SQLite serialises writers (BEGIN IMMEDIATE)."""
    sqlite = url.startswith("sqlite")
    kwargs = {"connect_args": {"timeout": 120}} if sqlite else {}
    for attempt in range(20):  # up to about a minute: a loaded machine creates tables slowly
        try:
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_of(grace_s),
                grace_period=grace_s)
            break
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.ProgrammingError):
            # Two workers creating one new database race on its tables (PostgreSQL says
            # "already exists" or a unique violation); the loser finds them made a moment later.
            if attempt == 19:
                raise HemacnnError(f"cannot open study storage {url}: it stays locked or "
                                   "inconsistent; is another program writing it?") from None
            time.sleep(min(0.5 * (attempt + 1), 5.0))
        except Exception as exc:  # bad URL, missing driver, unreachable server
            raise HemacnnError(f"cannot open study storage {url}: {exc}") from None
    if sqlite:
        # SQLite's default deferred transactions let two writers deadlock on upgrade (one of
        # them fails at once with "database is locked"); IMMEDIATE ones queue for the lock.
        @sqlalchemy.event.listens_for(storage.engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        @sqlalchemy.event.listens_for(storage.engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        storage.engine.dispose()
    return storage


def _process_start(pid: int) -> str | None:
    try:  # field 22 of /proc/PID/stat: start time, so a reused pid is not mistaken as alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: Any, start: Any) -> bool:
    if not isinstance(pid, int):
        return True  # unknown: leave it to the heartbeat
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start is None or _process_start(pid) in (None, start)


def _point_of(trial: Any) -> str | None:
    # A queued trial has no params yet: its point is the user attribute it was enqueued with.
    return trial.params.get("point") or trial.user_attrs.get("point")


def open_study(url: str, study_name: str, names: Sequence[str], grace_s: int = GRACE_S):
    """Create or load the Optuna study (a grid over the point names)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = open_storage(url, grace_s)
    sampler = optuna.samplers.GridSampler({"point": list(names)}, seed=0)
    return optuna.create_study(study_name=study_name, storage=storage, sampler=sampler,
                               load_if_exists=True, direction="minimize")


def reap_dead(study: Any) -> int:
    """Fail RUNNING trials whose worker was a process on this machine that no longer exists."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = t.user_attrs
        if attrs.get("host") == HOST and not _alive(attrs.get("pid"), attrs.get("pid_start")):
            try:
                study.tell(t.number, state=TrialState.FAIL)
                n += 1
            except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
                pass  # finished meanwhile (its worker told it, or another worker failed it)
    return n


def fail_stale(study: Any) -> None:
    """Fail RUNNING trials whose heartbeat is older than the grace period (dead workers on
    any machine), so their points can be claimed again."""
    optuna.storages.fail_stale_trials(study)


def _deleted(trial: Any, out: Path, oid: str) -> bool:
    """A COMPLETE trial whose run folder is in this study folder and is no longer finished."""
    attrs = trial.user_attrs
    here = attrs["out_id"] == oid if "out_id" in attrs else attrs.get("host") == HOST
    return here and not is_finished(run_dir_of(out, _point_of(trial)))


def study_state(study: Any, out: Path, oid: str) -> dict[str, set[str]]:
    """Point names by trial state: complete, running, waiting; and ``deleted``: points whose
    only COMPLETE trials have lost their run folder here (so they are not complete)."""
    state: dict[str, set[str]] = {"complete": set(), "running": set(), "waiting": set(),
                                  "deleted": set()}
    key = {TrialState.COMPLETE: "complete", TrialState.RUNNING: "running",
           TrialState.WAITING: "waiting"}
    for t in study.get_trials(deepcopy=False):
        name = _point_of(t)
        if t.state not in key or not name:
            continue
        if t.state == TrialState.COMPLETE and _deleted(t, out, oid):
            state["deleted"].add(name)
        else:
            state[key[t.state]].add(name)
    state["deleted"] -= state["complete"]
    return state


def _best_val_loss(run_dir: Path) -> float:
    losses = [r.get("val_loss", math.nan) for r in read_metrics(RunDir(run_dir).metrics)]
    return min((v for v in losses if v == v), default=0.0)


def train_point(point: RunPoint, run_dir: Path, progress: bool) -> str:
    """Train a point into its run folder; resume it if a checkpoint is there. Returns the mode."""
    if RunDir(run_dir).last.is_file():
        train(resume=run_dir, progress=progress, command=point.command)
        return "resumed"
    if run_dir.exists():  # killed before its first checkpoint: nothing worth keeping
        shutil.rmtree(run_dir)
    train(point.base, overrides=point.overrides, out=run_dir, progress=progress,
          command=point.command)
    return "trained"


@dataclass
class _Job:
    points: list[RunPoint]
    out: str
    url: str
    study_name: str
    progress: bool
    grace_s: int = GRACE_S


def work(job: _Job, echo: Callable[[str], None] = print) -> Outcome:
    """One worker: claim unfinished points from the study storage and train them until every
    point is complete. While the only unfinished points are RUNNING in other workers it waits:
    a worker that dies (on any machine) stops its heartbeat, and after the grace period its
    point is failed here and claimed by this worker."""
    out = Path(job.out)
    by_name = {p.name: p for p in job.points}
    study = open_study(job.url, job.study_name, list(by_name), job.grace_s)
    oid = out_id(out)
    result = Outcome()
    tried: set[str] = set()
    current: dict[str, str] = {}

    def objective(trial: optuna.Trial) -> float:
        name = trial.suggest_categorical("point", list(by_name))
        for key, value in (("host", HOST), ("pid", os.getpid()),
                           ("pid_start", _process_start(os.getpid())), ("out_id", oid)):
            trial.set_user_attr(key, value)
        others = [t for t in study.get_trials(
            deepcopy=False,
            states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE))
            if t.number != trial.number and _point_of(t) == name
            and not (t.state == optuna.trial.TrialState.COMPLETE and _deleted(t, out, oid))]
        if others:  # a duplicate claim: another trial has (or had) this point
            raise optuna.TrialPruned(f"point {name} is taken by trial {others[0].number}")
        current["name"] = name
        tried.add(name)
        run_dir = run_dir_of(out, name)
        if is_finished(run_dir):  # finished before its trial was told (killed in between)
            trial.set_user_attr("trained", False)
            return _best_val_loss(run_dir)
        echo(f"point {name}: {'resuming' if run_dir.exists() else 'training'} -> {run_dir}")
        t0 = time.monotonic()
        mode = train_point(by_name[name], run_dir, job.progress)
        trial.set_user_attr("trained", True)
        trial.set_user_attr("mode", mode)
        (result.resumed if mode == "resumed" else result.trained).append(name)
        echo(f"point {name}: done in {time.monotonic() - t0:.0f} s")
        return _best_val_loss(run_dir)

    waiting_for: set[str] = set()
    while True:
        reap_dead(study)
        fail_stale(study)
        state = study_state(study, out, oid)
        todo = [n for n in by_name if n not in state["complete"] and n not in tried]
        free = [n for n in todo if n not in state["running"]]
        if not free:
            busy = set(todo) & state["running"]
            if not busy:
                result.unfinished = [n for n in by_name if n not in state["complete"]]
                return result
            if busy != waiting_for:
                echo(f"waiting for {len(busy)} point(s) running in other workers: "
                     f"{', '.join(sorted(busy))} (a dead worker's point is taken over after "
                     f"{job.grace_s} s without its heartbeat)")
                waiting_for = busy
            try:
                time.sleep(heartbeat_of(job.grace_s))
            except KeyboardInterrupt:
                raise Interrupted("sweep interrupted; run the same command again to "
                                  "resume") from None
            continue
        for name in free:
            if name not in state["waiting"]:
                study.enqueue_trial({"point": name}, user_attrs={"point": name},
                                    skip_if_exists=False)
        current.clear()
        try:
            study.optimize(objective, n_trials=1, catch=())
        except (Interrupted, KeyboardInterrupt):
            raise Interrupted("sweep interrupted; run the same command again to resume") from None
        except Exception as exc:  # one failed point must not stop the others
            name = current.get("name", "?")
            result.failed[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            echo(f"point {name}: FAILED: {result.failed[name]}")


def _worker_main(job: _Job, queue: Any) -> None:
    try:
        queue.put(work(job, echo=lambda s: print(s, flush=True)))
    except HemacnnError as exc:
        print(f"worker {os.getpid()}: error: {exc}", flush=True)
        queue.put(Outcome(failed={"?": str(exc)}))


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` set in this process's environment for the block, then restored: a worker
    spawned inside inherits it from its first instruction (torch reads OMP_NUM_THREADS and
    CUDA_VISIBLE_DEVICES when it loads, which unpickling the worker's job already does)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker_envs(n: int) -> list[dict[str, str]]:
    """Per-worker environment: one GPU each when there are GPUs, else a share of the cores."""
    gpus = torch.cuda.device_count()
    if gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(gpus))))
        ids = visible.split(",")
        return [{"CUDA_VISIBLE_DEVICES": ids[i % len(ids)]} for i in range(n)]
    threads = str(max(1, (os.cpu_count() or 1) // n))
    return [{"OMP_NUM_THREADS": threads} for _ in range(n)]


def run_points(points: Sequence[RunPoint], out: str | os.PathLike, study_name: str, *,
               workers: int = 1, storage: str | None = None, progress: bool = True,
               grace_s: int = GRACE_S, echo: Callable[[str], None] = print,
               notes: Sequence[str] = ()) -> Outcome:
    """Run every point once as ``OUT/runs/<name>/`` through an Optuna storage (the reusable core:
    skip finished points, resume killed ones, share the work with other processes). ``notes``
    are printed after the count of points, before anything trains, when something will."""
    if workers < 1:
        raise HemacnnError(f"--workers must be at least 1 (got {workers})")
    if grace_s < 2:
        raise HemacnnError(f"--grace must be at least 2 seconds (got {grace_s})")
    out = Path(out)
    url = storage_url(out, storage)
    study = open_study(url, study_name, [p.name for p in points], grace_s)
    oid = out_id(out)
    reap_dead(study)
    fail_stale(study)
    state = study_state(study, out, oid)
    todo = [p.name for p in points if p.name not in state["complete"]
            and not is_finished(run_dir_of(out, p.name))]
    resume = [n for n in todo if RunDir(run_dir_of(out, n)).last.is_file()]
    busy = [n for n in todo if n in state["running"]]
    gone = [n for n in todo if n in state["deleted"] and n not in resume]
    extra = [f"{len(resume)} resume from a checkpoint"] if resume else []
    extra += [f"{len(busy)} running in another worker"] if busy else []
    extra += [f"{len(gone)} trained before, run folder deleted"] if gone else []
    echo(f"{len(todo)} of {len(points)} points to run" + (f" ({'; '.join(extra)})"
                                                          if extra else ""))
    for note in notes if todo else ():
        echo(note)
    job = _Job(list(points), str(out), url, study_name, progress and workers == 1, grace_s)
    if workers == 1 or len(todo) <= 1:
        return work(job, echo)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = []
    for env in _worker_envs(min(workers, len(todo))):
        proc = ctx.Process(target=_worker_main, args=(job, queue))
        with _environment(env):  # the new interpreter has it before it imports torch
            proc.start()
        procs.append(proc)
    outcomes: list[Outcome] = []
    while len(outcomes) < len(procs):
        try:
            outcomes.append(queue.get(timeout=1.0))
        except queue_module.Empty:
            if not any(p.is_alive() for p in procs) and queue.empty():
                break  # a worker died without reporting (killed): its trial is reaped later
    for proc in procs:
        proc.join()
    total = Outcome()
    for o in outcomes:
        total.trained += o.trained
        total.resumed += o.resumed
        total.failed.update(o.failed)
    total.unfinished = sorted(set(p.name for p in points)
                              - study_state(study, out, oid)["complete"])
    return total


def all_finished(result: Outcome, points: Sequence[Any], out: Path, unit: str, report: str,
                 echo: Callable[[str], None] = print) -> bool:
    """After :func:`run_points`: a one-line error for failed points; False (with a note) while
    other workers still run some, so the caller leaves the summary to ``report``."""
    if result.failed:
        name, err = next(iter(result.failed.items()))
        raise HemacnnError(f"{len(result.failed)} {unit}(s) failed, first {name}: {err}; fix "
                           "the cause and run the same command again to retry them")
    missing = [p.name for p in points if not is_finished(run_dir_of(out, p.name))]
    running = [n for n in missing if n in result.unfinished]
    elsewhere = [n for n in missing if n not in result.unfinished]
    if running:
        echo(f"{len(running)} {unit}(s) still running in other workers: {', '.join(running)}; "
             f"summarise later with `{report} {out}`")
    if elsewhere:
        echo(f"{len(elsewhere)} {unit}(s) finished by workers on another machine, whose run "
             f"folders are not in {out}: {', '.join(elsewhere)}; summarise where all are")
    return not missing
