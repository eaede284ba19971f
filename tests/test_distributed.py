"""`trainer=ddp` under torchrun: two CPU ranks (gloo) train every stage; rank 0 alone writes the outputs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Hénon toy at a small size that still learns (chance is 1/7); the same settings in both runs.
COMMON = ["debug=tiny", "logger=none", "data.n_per_class=300", "data.n_test_per_class=50", "data.noise=0.3",
          "stage.pretrain.epochs=8", "stage.refine.epochs=4", "stage.pretrain.lr=3e-3", "stage.refine.lr=3e-3",
          "model.head.hidden=[32]", "model.predictor.hidden=[32]", "trainer.precision=32-true", "trainer.fused=false"]
# debug=tiny batches are 256 / 512 / 256: each of the two ranks takes half, so the global batch is the same.
HALF_BATCH = ["stage.pretrain.batch_size=128", "stage.demix.batch_size=256", "stage.refine.batch_size=128"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*cmd, f"paths.output_dir={out}", f"hydra.run.dir={out}/run"]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_torchrun_two_ranks_match_single_process_and_write_once(tmp_path: Path) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                f"--master_port={_free_port()}", "run.py"]
    ddp = _run([*torchrun, *COMMON, *HALF_BATCH, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"],
               tmp_path / "ddp")
    _run([sys.executable, "run.py", *COMMON, "trainer=cpu"], tmp_path / "single")

    # both ranks ran the pipeline and DDP had two members
    assert "rank 0 of 2 (torchelastic, gloo)" in ddp.stderr + ddp.stdout
    assert "rank 1 of 2 (torchelastic, gloo)" in ddp.stderr + ddp.stdout
    # exactly one set of outputs: one results.json, one cache entry per stage, no temporary folders left
    results = sorted((tmp_path / "ddp").rglob("results.json"))
    assert results == [tmp_path / "ddp" / "run" / "results.json"]
    cache = tmp_path / "ddp" / "cache"
    for stage in ("pretrain", "demix", "augment", "refine"):
        entries = [p for p in (cache / stage).iterdir() if p.is_dir()]
        assert len(entries) == 1 and not entries[0].name.startswith("."), entries
        assert (entries[0] / "outputs.pt").is_file() and (entries[0] / "meta.json").is_file()
    assert sorted(p.name for p in (tmp_path / "ddp" / "run" / "model").iterdir()) == ["model.json", "weights.pt"]
    res = json.loads(results[0].read_text())
    assert res["world_size"] == 2
    # rank 1 printed the metrics it computed from the entries rank 0 wrote: the same numbers
    printed = [line for line in ddp.stdout.splitlines() if line.startswith("test/bal_acc")]
    assert len(printed) == 2 and printed[0] == printed[1]

    ref = json.loads((tmp_path / "single" / "run" / "results.json").read_text())
    assert ref["world_size"] == 1
    for key in ("test/bal_acc", "test/top1"):  # same training at the same global batch: equal within noise
        assert abs(res["metrics"][key] - ref["metrics"][key]) <= 0.1, (key, res["metrics"][key], ref["metrics"][key])
        assert res["metrics"][key] > 1 / 7 + 0.05 and ref["metrics"][key] > 1 / 7 + 0.05


SLURM_RANK1 = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NODEID": "0",
               "SLURM_JOB_ID": "4321", "SLURM_NODELIST": "gpu-node7", "SLURM_JOB_NAME": "run.py"}
TORCHRUN_RANK1 = {"RANK": "1", "LOCAL_RANK": "1", "GROUP_RANK": "0", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2",
                  "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "t1"}


def _clean_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for k in list(os.environ):
        if k.startswith("SLURM_") or k in TORCHRUN_RANK1 or k == "TORCHELASTIC_RUN_ID":
            monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_slurm_task_is_found_as_a_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.fabric.plugins.environments import SLURMEnvironment

    from crt.distributed import launcher_environment

    _clean_env(monkeypatch, SLURM_RANK1)
    env = launcher_environment()
    assert isinstance(env, SLURMEnvironment)
    assert (env.global_rank(), env.world_size(), env.local_rank()) == (1, 2, 1)
    assert env.main_address == "gpu-node7" and env.main_port == 15000 + 4321  # the same on every task of the job
    _clean_env(monkeypatch, {})
    assert launcher_environment() is None


@pytest.mark.parametrize("env", [SLURM_RANK1, TORCHRUN_RANK1], ids=["srun", "torchrun"])
def test_launched_ranks_need_the_ddp_strategy(monkeypatch: pytest.MonkeyPatch, make_cfg, env: dict[str, str]) -> None:
    from crt.distributed import setup
    from crt.errors import ConfigError

    _clean_env(monkeypatch, env)
    with pytest.raises(ConfigError, match=r"one of 2 started by .*trainer.strategy='ddp_spawn'.*Fix: add trainer=ddp"):
        setup(make_cfg("trainer=ddp_sim"))


def test_plain_start_of_ddp_fits_with_ddp_spawn(monkeypatch: pytest.MonkeyPatch, make_cfg) -> None:
    from crt.distributed import setup
    from crt.errors import ConfigError

    _clean_env(monkeypatch, {})
    cfg = make_cfg("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    ranks = setup(cfg)
    assert (ranks.rank, ranks.world, ranks.is_zero) == (0, 1, True)
    assert cfg.trainer.strategy == "ddp_spawn"  # one process runs the pipeline; Lightning spawns the workers
    one = make_cfg("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1")
    setup(one)
    assert one.trainer.strategy == "ddp"  # a single device needs no extra process
    with pytest.raises(ConfigError, match=r"trainer.num_nodes=2 needs a launcher.*Fix: run under srun"):
        setup(make_cfg("trainer=ddp", "trainer.num_nodes=2"))
