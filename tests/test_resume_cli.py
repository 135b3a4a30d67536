"""`shoprec train` killed with SIGKILL in the middle of an epoch resumes from its checkpoint
and ends with the same weights, bit for bit, as a run that was never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

CONFIG = {
    "name": "resume",
    "data": {
        "dataset": "simulated",
        "simulate": {"n_events": 3000, "n_users": 200, "n_items": 150, "seed": 0},
        "behaviors": ["view", "cart", "buy"],
    },
    "split": {"kind": "time", "test_days": 14, "valid_days": 7},
    "recipe": {"name": "pairs", "n_negatives": 2},
    "tasks": ["view", "cart", "buy"],
    "model": {
        "name": "mmoe",
        "embedding_dim": 8,
        "config": {"n_experts": 2, "expert_dims": [16], "tower_dims": [8]},
    },
    # patience 99: every epoch runs, so the kill lands before the end; small batches make an
    # epoch last long enough (a few hundred steps) to be killed in the middle
    "train": {
        "epochs": 3,
        "batch_size": 32,
        "lr": 0.003,
        "seed": 0,
        "patience": 99,
        "threads": 1,
        "progress": False,
    },
    "evaluate": {"bootstrap": 0, "slices": False, "ks": [10]},
}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "shoprec.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _weights(artifact: Path) -> dict:
    files = sorted((artifact / "scorer").rglob("*.safetensors"))
    assert files, f"no weights under {artifact}"
    return {(f.name, k): v for f in files for k, v in load_file(f).items()}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def test_sigkill_mid_epoch_then_resume_gives_bitwise_equal_weights(tmp_path: Path) -> None:
    config = tmp_path / "resume.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    ckpt = tmp_path / "killed.checkpoints"  # the default: beside the artifact

    # the uninterrupted run and the one to be killed run side by side
    whole = subprocess.Popen(
        _cli("train", str(config), "--output", str(straight)),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    victim = subprocess.Popen(
        _cli("train", str(config), "--output", str(killed)),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not (ckpt / "fit-1" / "latest.json").exists():  # the first epoch's checkpoint
        assert victim.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert not killed.exists()  # no artifact: it died while training
    epoch = int((ckpt / "fit-1" / "latest.json").read_text().split('"epoch": ')[1].rstrip("}"))
    assert epoch < CONFIG["train"]["epochs"]

    resumed = subprocess.run(
        _cli("train", str(config), "--output", str(killed)),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr
    log = " ".join(resumed.stderr.split())
    assert "resuming the interrupted run" in log
    assert f"after epoch {epoch} of 3" in log
    assert not ckpt.exists()  # removed once the artifact is written

    output, _ = whole.communicate(timeout=240)
    assert whole.returncode == 0, output.decode()
    a, b = _weights(straight), _weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(_bits(a[key]), _bits(b[key])), key


def test_resume_without_a_checkpoint_and_restart(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from shoprec.cli import app

    config = tmp_path / "resume.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    args = ["train", str(config), "--output", str(tmp_path / "a"), "--resume"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "nothing to resume" in " ".join(result.stderr.split())


def test_which_checkpoints_a_run_resumes(tmp_path: Path) -> None:
    """Only an unfinished run of the same config is resumed; anything else starts over."""
    import json

    from shoprec.train.loop import CheckpointError, checkpointing

    folder = tmp_path / "ckpt"

    def killed_run(key: str, complete: bool = False) -> None:
        epoch = folder / "fit-1" / "epoch-0001"
        epoch.mkdir(parents=True, exist_ok=True)
        (epoch / "trainer.json").write_text("{}")
        (folder / "fit-1" / "latest.json").write_text(json.dumps({"folder": epoch.name}))
        (folder / "run.json").write_text(json.dumps({"key": key, "complete": complete}))

    killed_run("a")
    with checkpointing(folder, "a") as resumed:
        assert resumed
    assert not folder.exists()  # removed after success (keep=False)
    killed_run("a")
    with checkpointing(folder, "b") as resumed:  # another config: starts over
        assert not resumed and not (folder / "fit-1").exists()
    killed_run("a", complete=True)
    with checkpointing(folder, "a", keep=True) as resumed:  # a finished run: starts over
        assert not resumed
    assert json.loads((folder / "run.json").read_text()) == {"key": "a", "complete": True}
    killed_run("a")
    with checkpointing(folder, "a", resume=False) as resumed:  # --restart
        assert not resumed
    for key in ("a", "b"):  # --resume with nothing of this config to resume
        with (
            pytest.raises(CheckpointError, match="nothing to resume"),
            checkpointing(folder, key, resume=True),
        ):
            pass
