"""``shoprec serve --workers 2`` as real processes: every worker sees every event, stock
level, reload and forget made through another one, and SIGTERM leaves no process behind.
Products added at run time, and a worker started after the changes, are checked with two
apps over one store in this process (a worker is one app; the fake recipe, which can add
products, is registered only here).

Which worker answers is read from the ``X-Shoprec-Worker`` header; a keep-alive connection
stays with the worker that accepted it, so the test holds one connection per worker.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving_helpers import API_KEY, fake_artifact, tiny_artifact
from shoprec.serve import ServeConfig, create_app
from shoprec.serve.store import EventStore

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """``pid``'s descendants (from /proc)."""
    parents: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited


class Workers:
    """One keep-alive connection per worker process of the server on ``port``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conns: dict[str, http.client.HTTPConnection] = {}

    def connect(self, want: int = 2, seconds: float = 120.0) -> list[str]:
        """Open connections at once (the workers accept them in turns) until ``want``
        workers hold one (a worker still loading the model answers nothing yet); returns
        the worker ids."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            fresh = [http.client.HTTPConnection(HOST, self.port, timeout=60) for _ in range(8)]
            with ThreadPoolExecutor(len(fresh)) as pool:
                names = list(pool.map(self._name, fresh))
            for conn, name in zip(fresh, names, strict=True):
                if name not in self.conns:
                    self.conns[name] = conn
                else:
                    conn.close()
            if len(self.conns) >= want:
                return sorted(self.conns)
            time.sleep(0.2)
        raise AssertionError(f"only workers {sorted(self.conns)} answered")

    @staticmethod
    def _name(conn: http.client.HTTPConnection) -> str:
        conn.request("GET", "/health")
        r = conn.getresponse()
        r.read()
        return r.getheader("X-Shoprec-Worker") or ""

    def ask(self, worker: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one request over ``worker``'s connection (reopened if the server closed it
        when idle); asserts that worker answered."""
        headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
        data = None if body is None else json.dumps(body)
        for _ in range(2):
            conn = self.conns[worker]
            try:
                conn.request(method, path, body=data, headers=headers)
                r = conn.getresponse()
                payload = r.read()
                break
            except (http.client.RemoteDisconnected, ConnectionError):
                conn.close()
                del self.conns[worker]
                self.connect(want=len(self.conns) + 1)
        assert r.getheader("X-Shoprec-Worker") == worker
        return r.status, json.loads(payload)

    def text(self, worker: str, path: str) -> str:
        """A text answer of ``worker``."""
        conn = self.conns[worker]
        conn.request("GET", path)
        r = conn.getresponse()
        assert r.getheader("X-Shoprec-Worker") == worker
        return r.read().decode()

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_artifact(tmp_path_factory.getbasetemp())


def test_two_workers_share_events_changes_and_forget(original: Path, tmp_path: Path) -> None:
    path = tmp_path / "served"  # forget rewrites the artifact: a copy of the shared one
    shutil.copytree(original, path, ignore=shutil.ignore_patterns("*.sqlite*"))
    port = _free_port()
    cmd = [sys.executable, "-m", "shoprec", "serve", str(path), "--workers", "2"]
    cmd += ["--port", str(port), "--api-key", API_KEY, "--db", str(tmp_path / "events.sqlite")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    workers = Workers(port)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            try:
                a, b = workers.connect()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start in 120 s"
                time.sleep(0.3)
        pids = {proc.pid, *_children(proc.pid)}
        assert {int(a), int(b)} <= pids and a != b

        # an event acknowledged by worker A is in worker B's next answer
        _, users = workers.ask(b, "GET", "/users?limit=3")
        user = users["users"][1]["user"]
        _, first = workers.ask(b, "GET", f"/recommend/{user}?k=6")
        assert first["live_events"] == 0
        top = first["items"][0]["item"]
        status, ack = workers.ask(
            a, "POST", "/events", {"user": user, "item": top, "behavior": "buy"}
        )
        assert status == 201 and ack["known_item"]
        _, second = workers.ask(b, "GET", f"/recommend/{user}?k=6")
        assert second["live_events"] == 1
        assert top not in [x["item"] for x in second["items"]]  # bought: filtered out
        _, history = workers.ask(b, "GET", f"/history/{user}")
        assert (history["events"][0]["item"], history["events"][0]["source"]) == (top, "session")

        # /metrics sums the workers' counts, whichever answers (each writes them every 1 s)
        deadline = time.monotonic() + 30
        while 'shoprec_events_total{behavior="buy"} 1' not in workers.text(b, "/metrics"):
            assert time.monotonic() < deadline, "worker B's /metrics never counted A's event"
            time.sleep(0.5)

        # a stock level set through A: B no longer recommends the item
        gone = second["items"][0]["item"]
        status, stock = workers.ask(a, "PUT", "/admin/stock", {"stock": {gone: 0}})
        assert status == 200 and stock["updated"] == 1
        _, third = workers.ask(b, "GET", f"/recommend/{user}?k=6")
        assert gone not in [x["item"] for x in third["items"]]

        # a reload through A: B serves a model loaded after it, and keeps the stock level
        _, before = workers.ask(b, "GET", "/health")
        status, _ = workers.ask(a, "POST", "/admin/reload", {})
        assert status == 200
        _, after = workers.ask(b, "GET", "/health")
        assert after["loaded_at"] > before["loaded_at"]
        _, fourth = workers.ask(b, "GET", f"/recommend/{user}?k=6")
        assert gone not in [x["item"] for x in fourth["items"]]

        # forget through A: B knows neither the shopper nor their events
        assert fourth["known_user"] is True
        status, forgot = workers.ask(a, "DELETE", f"/users/{user}")
        assert status == 200 and forgot["events_deleted"] == 1 and forgot["known"]
        _, fifth = workers.ask(b, "GET", f"/recommend/{user}?k=6")
        assert fifth["known_user"] is False and fifth["live_events"] == 0
        _, history = workers.ask(b, "GET", f"/history/{user}")
        assert history["known_user"] is False and history["events"] == []
    finally:
        workers.close()
        pids = [proc.pid, *_children(proc.pid)]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.stderr:
                proc.stderr.close()
    assert proc.returncode == 0
    time.sleep(0.5)  # the parent waited for its workers; give the kernel a moment
    assert [p for p in pids if _alive(p)] == []  # no orphan worker


def test_apps_over_one_store_share_products_stock_and_replay(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    path = fake_artifact(tmp_path_factory.getbasetemp())
    db = tmp_path / "events.sqlite"
    store = EventStore(db)
    epoch = store.begin_epoch(path)  # what shoprec serve --workers does before the workers
    store.close()

    def worker() -> TestClient:
        return TestClient(create_app(ServeConfig(path, db=db, api_key=API_KEY, epoch=epoch)))

    auth = {"X-API-Key": API_KEY}
    product = {"item": "sku-launch", "title": "Launch", "category": "bags", "price": 2.0}
    with worker() as a, worker() as b:
        n = b.get("/health").json()["items"]
        assert a.post("/admin/catalog", json={"items": [product]}, headers=auth).status_code == 201
        assert b.get("/health").json()["items"] == n + 1  # B's next request applied it
        assert b.get("/similar/sku-launch", params={"k": 3}).status_code == 200
        ack = b.post("/events", json={"user": "g1", "item": "sku-launch", "behavior": "view"},
                     headers=auth).json()  # fmt: skip
        assert ack["known_item"] is True
        # B now refuses the product A added, as A does
        assert b.post("/admin/catalog", json={"items": [product]}, headers=auth).status_code == 409
        user = b.get("/users", params={"limit": 1}, headers=auth).json()["users"][0]["user"]
        top = b.get(f"/recommend/{user}", params={"k": 3}).json()["items"][0]["item"]
        assert b.put("/admin/stock", json={"stock": {top: 0}}, headers=auth).status_code == 200
        listed = [x["item"] for x in a.get(f"/recommend/{user}", params={"k": 3}).json()["items"]]
        assert top not in listed
        assert a.get("/history/g1", headers=auth).json()["events"][0]["item"] == "sku-launch"
        # a worker started (or restarted) now replays every change of this run
        with worker() as c:
            assert c.get("/health").json()["items"] == n + 1
            listed = [
                x["item"] for x in c.get(f"/recommend/{user}", params={"k": 3}).json()["items"]
            ]
            assert top not in listed
            assert c.get("/metrics").headers["X-Shoprec-Worker"] == str(os.getpid())
