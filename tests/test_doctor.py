"""``hemacnn doctor`` and the one-line answer to a broken torch/torchvision pair."""
from __future__ import annotations

import pytest

from hemacnn import doctor
from hemacnn.cli import main

# What `import torchvision` raises when its compiled operators do not match the installed torch
# (the last line of the 40-line traceback a user saw at `hemacnn demo`).
NMS_ERROR = "operator torchvision::nms does not exist"


def test_doctor_reports_every_part_of_the_installation(capsys) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[1] for line in out.splitlines()]
    assert names == ["python", "torch", "torchvision", "cpu", "extra", "playwright", "psycopg",
                     "chromium", "postgresql"]
    assert "pairs with torch" in out and "native bf16:" in out


def test_a_mismatched_pair_is_one_line_with_the_fix(monkeypatch, capsys) -> None:
    versions = {"torch": "2.14.1", "torchvision": "0.28.0"}
    monkeypatch.setattr(doctor, "_version", lambda dist: versions.get(dist, "1.0"))
    assert main(["doctor"]) == 1
    failed = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("FAIL")]
    assert len(failed) == 1
    assert "0.28.0 does not pair with torch 2.14.1" in failed[0]
    assert "pip install 'torchvision==0.29.*'" in failed[0]


def test_a_failing_torchvision_import_is_one_line_in_the_doctor(monkeypatch, capsys) -> None:
    real = doctor._import

    def broken(name: str):
        if name == "torchvision":
            raise RuntimeError(NMS_ERROR)
        return real(name)

    monkeypatch.setattr(doctor, "_import", broken)
    assert main(["doctor"]) == 1
    failed = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("FAIL")]
    assert len(failed) == 1 and NMS_ERROR in failed[0] and "pip install" in failed[0]


@pytest.mark.parametrize("exc", [RuntimeError(NMS_ERROR),
                                 ImportError("/venv/torchvision/_C.so: undefined symbol: "
                                             "_ZN3c106detail14torchCheckFail")])
def test_a_broken_pair_at_start_up_is_one_error_line(monkeypatch, capsys, exc) -> None:
    # The command that first imports torchvision (demo: the trainer, timm) raises the real
    # error; the CLI answers with one line that names the fix and the doctor.
    import hemacnn.demo

    def run_demo(**_):
        raise exc

    monkeypatch.setattr(hemacnn.demo, "run_demo", run_demo)
    assert main(["demo", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: torch ")
    assert "do not work together" in err[0] and "hemacnn doctor" in err[0]
    assert "pip install" in err[0]


def test_other_runtime_errors_are_not_taken_for_a_broken_pair(monkeypatch) -> None:
    import hemacnn.demo

    def run_demo(**_):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(hemacnn.demo, "run_demo", run_demo)
    with pytest.raises(RuntimeError, match="out of memory"):
        main(["demo"])
