"""Shared by test_recommend, test_serve and test_web: a tiny trained artifact with retrieval
files (built once per test session) and a real uvicorn server in a thread."""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from shoprec.experiment import ExperimentConfig, train_from_config
from shoprec.recommend import TwoTowerConfig, build_retrieval

API_KEY = "test-key"


@functools.cache
def tiny_artifact(root: Path) -> Path:
    """Train MMoE on ~8k simulated events (3 epochs) and build the retrieval files under
    ``root`` (once per ``root``: pass the session's base temp folder)."""
    cfg = ExperimentConfig(
        name="tiny",
        data={
            "dataset": "simulated",
            "simulate": {"n_events": 8000, "n_users": 400, "n_items": 300, "seed": 0},
            "split": {"kind": "time", "test_days": 14, "valid_days": 7},
            "behaviors": ["view", "cart", "buy"],
            "n_negatives": 2,
        },
        model={
            "name": "mmoe",
            "embedding_dim": 8,
            "config": {"n_experts": 3, "expert_dims": [16], "tower_dims": [8]},
        },
        train={"epochs": 3, "batch_size": 256, "lr": 0.005, "seed": 0, "progress": False},
    )
    path = train_from_config(cfg, root / "tiny_artifact")
    build_retrieval(path, TwoTowerConfig(epochs=3, batch_size=256))
    return path


@contextlib.contextmanager
def serving(app: FastAPI, timeout: float = 60.0) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
