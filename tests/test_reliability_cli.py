"""Runs you can trust (issue 11) through run.py: exit codes of signals, kill -9 then resume, sweeps that go
on past an invalid job."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from crt.pipeline import run
from tests.conftest import ROOT, compose_cfg

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY = ["debug=tiny", "data.n_per_class=200", "data.n_test_per_class=50", "data.input_dim=8",
        "checkpoint_interval_s=0"]  # a checkpoint at every epoch, whatever its length

# run.py, but the process kills itself with SIGKILL (no cleanup, no handler) when demix reaches epoch K
KILL_AT = """
import os, runpy, signal, sys
from crt.stages.modules import DemixModule
orig = DemixModule.training_step
def step(self, batch, i):
    if self.current_epoch == int(os.environ["KILL_AT_EPOCH"]) - 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return orig(self, batch, i)
DemixModule.training_step = step
sys.argv = ["run.py", *sys.argv[1:]]
runpy.run_path("run.py", run_name="__main__")
"""


def _cli(*args: str, prefix: tuple[str, ...] = ("run.py",), env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *prefix, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=env or ENV, check=False)


def test_kill_9_in_demix_then_rerun_resumes_at_that_epoch_with_identical_metrics(tmp_path: Path) -> None:
    args = [*TINY, "stage.demix.epochs=6", "method.rho=0.5", "stage.selection.metric=ce"]
    cli = [*args, f"paths.output_dir={tmp_path / 'out'}", "progress=lines"]  # a line for every epoch
    killed = _cli(*cli, prefix=("-c", KILL_AT), env={**ENV, "KILL_AT_EPOCH": "4"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "[demix] epoch 3/6" in killed.stdout and "[demix] epoch 4/6" not in killed.stdout
    again = _cli(*cli)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "stage pretrain: reused from cache" in log
    assert "stage demix: resuming from its checkpoint after epoch 3/6: continuing at epoch 4" in log
    demix_epochs = re.findall(r"\[demix\] epoch (\d+)/6", again.stdout)
    assert demix_epochs == ["4", "5", "6"]  # not 1
    res = json.loads(Path(again.stdout.strip().splitlines()[-1].split("results: ", 1)[1]).read_text())
    meta = json.loads((Path(res["stages"]["demix"]["cache"]) / "meta.json").read_text())
    logged = [r["epoch"] for r in meta["history"] if "demix/val/loss" in r["metrics"]]
    assert logged == list(range(6))  # the logged history (replayed by jobs that reuse it) has the killed run's epochs
    whole = run(compose_cfg([*args, "checkpoint_every=0"], tmp_path / "whole"), run_dir=tmp_path / "whole" / "run")
    assert res["metrics"] == whole["metrics"]  # bit-identical on CPU


def test_sigterm_exits_143_naming_the_stage(tmp_path: Path) -> None:
    cmd = [sys.executable, "run.py", *TINY, "stage.demix.epochs=400", f"paths.output_dir={tmp_path}", "progress=lines"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    seen = []
    for line in proc.stdout:  # wait until demix is training
        seen.append(line)
        if line.startswith("[demix] epoch"):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    out = "".join(seen) + rest
    assert proc.returncode == 143, out[-3000:]
    assert "interrupted by SIGTERM during stage demix" in out and "rerun the same command" in out
    assert "Traceback" not in out
    assert not list(tmp_path.rglob("results.json"))


def test_multirun_goes_on_past_an_invalid_job_and_lists_it(tmp_path: Path) -> None:
    eighty = "[" + ",".join(map(str, range(80))) + "]"  # invalid for 7 classes, and a name too long for a folder
    out = _cli("-m", "method=erm", *TINY, f"data.minority_classes={eighty},[0]", f"paths.output_dir={tmp_path}")
    assert out.returncode == 2, out.stderr[-3000:]
    assert "1 job(s) of the multirun failed; the others ran" in out.stderr
    assert f"job #0 (data.input_dim=8,data.minority_classes={eighty}," in out.stderr and "Fix:" in out.stderr
    assert "Traceback" not in out.stderr
    done = list((tmp_path / "runs").rglob("results.json"))
    assert len(done) == 1 and json.loads(done[0].read_text())["data"]["minority_classes"] == [0]
    folders = [p for p in (tmp_path / "runs" / "toy_henon" / "erm").iterdir()]
    assert len(folders) == 2 and all(len(p.name) <= 80 for p in folders)
    long = next(p for p in folders if "data.minority_classes=[0,1,2" in p.name)
    assert eighty in (long / "seed0" / ".hydra" / "overrides.yaml").read_text()  # the full overrides are kept


@pytest.mark.parametrize("override,needle", [("seed=1.5", "seed=1.5 is not an integer"),
                                             ("+method.lamda=0.1", "method.lamda")])
def test_nonsense_config_exits_2_with_one_paragraph(tmp_path: Path, override: str, needle: str) -> None:
    out = _cli(override, f"paths.output_dir={tmp_path}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert needle in out.stderr and "Fix:" in out.stderr
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("override", ["method.name=../../../../x", "data.name=../..", "method.name=" + "m" * 300,
                                      "method.name=${oc.env:CRT_BAD_NAME}"])  # not on the command line: crt.name
def test_a_name_that_would_leave_its_folder_exits_2_before_any_folder_exists(tmp_path: Path, override: str) -> None:
    out = _cli("method=erm", override, f"paths.output_dir={tmp_path / 'a' / 'b' / 'out'}",
               env={**ENV, "CRT_BAD_NAME": "../../../../x"})
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    error = [p for p in out.stderr.split("\n\n") if p.strip().startswith("error:")]
    assert len(error) == 1 and "\n" not in error[0].strip(), out.stderr  # one paragraph
    assert f"error: {override.split('=')[0]}=" in error[0] and "names a folder of the run" in error[0]
    assert "Fix: use 1 to 100 letters" in error[0]
    assert not any(tmp_path.iterdir())  # Hydra created nothing, inside the output folder or outside it


@pytest.mark.parametrize("multirun", [False, True])
def test_a_run_folder_planted_as_a_link_gets_nothing_not_even_hydras_files(tmp_path: Path, multirun: bool) -> None:
    out_dir, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    planted = out_dir / "runs" / "toy_henon" / "erm" / "debug=tiny,method=erm" / "seed0"
    planted.parent.mkdir(parents=True)
    elsewhere.mkdir()
    planted.symlink_to(elsewhere)
    out = _cli(*(["-m"] if multirun else []), "method=erm", "debug=tiny", "logger=none", f"paths.output_dir={out_dir}")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert f"error: The run folder {planted} is a symbolic link" in out.stderr
    assert list(elsewhere.iterdir()) == []  # Hydra wrote no .hydra/ or log through the link


FULL_DISK = """
import io, os, runpy, sys, torch
real = torch.save
def save(obj, f, *a, **k):  # every file torch writes hits a full disk (/dev/full: ENOSPC)
    if isinstance(f, io.BytesIO):
        return real(obj, f, *a, **k)
    with open("/dev/full", "wb") as full:
        return real(obj, full, *a, **k)
torch.save = save
sys.argv = ["run.py", *sys.argv[1:]]
runpy.run_path("run.py", run_name="__main__")
"""


def test_a_full_disk_exits_2_naming_the_path_and_the_errno(tmp_path: Path) -> None:
    out = _cli("method=erm", *TINY, "checkpoint_every=0", f"paths.output_dir={tmp_path}", prefix=("-c", FULL_DISK))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert re.search(r"error: could not write \S+/outputs\.pt: No space left on device \(errno 28\)\. Fix: free space",
                     out.stderr), out.stderr[-3000:]
    assert "iostream" not in out.stderr and not list(tmp_path.rglob("results.json"))
