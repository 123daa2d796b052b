"""`hemacnn sweep --storage postgresql://…` shared between "machines", on a real PostgreSQL server.

A throw-away cluster is made under the test's temporary folder (Debian's ``postgresql`` package,
run as an unprivileged user, listening on 127.0.0.1 only), and two `hemacnn sweep` processes with
separate local study folders share one study on it, as workers on two machines would. Skips, with
the reason, where the server binaries or the Python driver are missing (CI installs both).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from factories import cli_env, read_csv, two_class_folder, write_study

# A throw-away PostgreSQL server and two sweep workers in child processes.
pytestmark = pytest.mark.slow

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


@pytest.fixture(scope="module")
def two_class_root(tmp_path_factory) -> Path:
    return two_class_folder(tmp_path_factory.mktemp("sweepdata"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory):
    """A PostgreSQL server of its own for this module; stopped and deleted at teardown."""
    if not PG_BIN or not os.path.isfile(os.path.join(PG_BIN[-1], "initdb")):
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="no PostgreSQL driver (pip install \"psycopg[binary]\")")
    bindir = PG_BIN[-1]
    run_as: list[str] = []
    base = tmp_path_factory.mktemp("pg")
    as_root = os.geteuid() == 0
    if as_root:  # initdb and postgres refuse to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        if not shutil.which("runuser"):
            pytest.skip("running as root and `runuser` is missing")
        run_as = ["runuser", "-u", "postgres", "--"]
        # pytest's temporary root is private to root; the server's user needs a folder it can
        # reach, so the cluster lives in a fresh folder of the system's temporary directory.
        base = Path(tempfile.mkdtemp(prefix="hemacnn-pg-"))
        os.chown(base, user.pw_uid, user.pw_gid)
    data, log = base / "data", base / "server.log"
    port = _free_port()
    subprocess.run([*run_as, f"{bindir}/initdb", "-D", str(data), "-U", "postgres",
                    "--auth=trust", "--no-sync"], check=True, capture_output=True)
    started = subprocess.run(
        [*run_as, f"{bindir}/pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60",
         "-o", f"-h 127.0.0.1 -p {port} -k '' -c fsync=off", "start"],
        capture_output=True, text=True)
    if started.returncode != 0:
        text = log.read_text() if log.is_file() else started.stderr
        pytest.fail(f"PostgreSQL did not start:\n{text}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate",
                        "-w", "stop"], capture_output=True)
        if as_root:  # the folder outside pytest's temporary root is ours to remove
            shutil.rmtree(base, ignore_errors=True)


def sweep(args: list[str], host: str | None = None) -> subprocess.Popen:
    """A `hemacnn sweep` process; ``host`` makes it report another machine's host name (so the
    other worker cannot see that its process died and must rely on the heartbeat)."""
    env = cli_env(OMP_NUM_THREADS="1")
    code = "import sys; from hemacnn.cli import main; sys.exit(main(sys.argv[1:]))"
    if host:
        code = f"import socket; socket.gethostname = lambda: {host!r}; " + code
    return subprocess.Popen([sys.executable, "-c", code, "sweep", *args, "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def started(log: str) -> list[str]:
    return [line.split(":")[0].removeprefix("point ") for line in log.splitlines()
            if line.startswith("point ") and " -> " in line]


def test_two_machines_share_one_study_each_point_once(tmp_path, two_class_root,
                                                      postgres_url):
    study = write_study(tmp_path, {"optimizer.lr": [0.003, 0.002, 0.001]},
                        study="pg-once")
    names = ["lr0.003", "lr0.002", "lr0.001"]
    outs = [tmp_path / "machine-a", tmp_path / "machine-b"]
    procs = [sweep([str(study), "--out", str(out), "--storage", postgres_url,
                    f"data.root={two_class_root}"]) for out in outs]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    runs = [started(log) for log in logs]
    assert sorted(runs[0] + runs[1]) == sorted(names), logs  # each point by exactly one worker
    for out, mine in zip(outs, runs, strict=True):  # each folder holds only its own points
        assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(mine)
        assert all((out / "runs" / n / "test_metrics.json").is_file() for n in mine)
    done = [t for t in trials(postgres_url, "pg-once-paper")
            if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("trained")]
    assert sorted(t.params["point"] for t in done) == sorted(names)
    # A folder without every run says where the rest are instead of summarising (finished on
    # the other machine, or still running there); a worker that happened to run every point
    # says neither.
    elsewhere = ("finished by workers on another machine", "still running in other workers")
    for log, mine in zip(logs, runs, strict=True):
        told = any(phrase in log for phrase in elsewhere)
        assert told == (sorted(mine) != sorted(names)), log


def test_killed_worker_point_is_finished_by_the_other_after_the_grace(
        tmp_path, two_class_root, postgres_url):
    grace = 6
    # Epochs enough that A is still inside the point when it is killed: with 2, the second
    # epoch and the test could finish in the moment between seeing the first epoch's row and
    # the kill (a fraction of a second on an idle machine).
    study = write_study(tmp_path, {"optimizer.lr": [0.003, 0.001]}, epochs=12, study="pg-kill")
    a_out, b_out = tmp_path / "machine-a", tmp_path / "machine-b"
    common = ["--storage", postgres_url, "--grace", str(grace), f"data.root={two_class_root}"]
    a = sweep([str(study), "--out", str(a_out), *common], host="machine-a")
    deadline = time.monotonic() + 300
    victim = None
    while time.monotonic() < deadline and a.poll() is None and victim is None:
        for run in (a_out / "runs").glob("*") if (a_out / "runs").is_dir() else []:
            if (run / "metrics.csv").is_file() and len(read_csv(run / "metrics.csv")) >= 1:
                victim = run.name
        time.sleep(0.2)
    assert a.poll() is None and victim, "machine A finished before it could be killed:\n" + (
        a.stdout.read() if a.poll() is not None else "")
    b = sweep([str(study), "--out", str(b_out), *common])  # machine B joins the study
    os.killpg(a.pid, signal.SIGKILL)  # A dies mid-point without telling the storage
    a.wait()
    assert not (a_out / "runs" / victim / "test_metrics.json").exists()
    log, _ = b.communicate(timeout=600)
    assert b.returncode == 0, log
    assert f"point {victim}: training" in log  # B trained the point A was killed in
    assert sorted(started(log)) == ["lr0.001", "lr0.003"]
    assert all((b_out / "runs" / n / "test_metrics.json").is_file()
               for n in ("lr0.001", "lr0.003"))
    assert (b_out / "summary.csv").is_file()  # every point is in B's folder: B summarises
    by_point: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for t in trials(postgres_url, "pg-kill-paper"):
        if t.state != optuna.trial.TrialState.PRUNED:
            by_point.setdefault(t.params.get("point"), []).append(t)
    killed = [t for t in by_point[victim] if t.user_attrs.get("host") == "machine-a"]
    assert [t.state for t in killed] == [optuna.trial.TrialState.FAIL]  # failed by heartbeat
    finished = [t for t in by_point[victim] if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 1 and finished[0].user_attrs["host"] != "machine-a"
    # The take-over waited for the grace period: B's trial started after A's last heartbeat
    # had been silent for the grace (the storage's own clock, both times).
    assert (finished[0].datetime_start - killed[0].datetime_start).total_seconds() >= grace
