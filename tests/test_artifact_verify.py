"""Artifacts are checked on load: a missing, truncated or changed file (weights,
seen.parquet, the retrieval index or two-tower model, the config) or weights of the wrong
shape give a clear error naming it, from Python, `shoprec recommend / evaluate / serve`
(exit 2) and `POST /admin/reload` (400, the old model keeps serving); reload loads only
artifacts under its root and never writes into them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from serving_helpers import API_KEY, tiny_artifact
from shoprec import artifact as artifacts
from shoprec.artifact import Artifact, ArtifactError
from shoprec.cli import app as cli
from shoprec.serve import ServeConfig, create_app

AUTH = {"X-API-Key": API_KEY}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_artifact(tmp_path_factory.getbasetemp())  # with retrieval files, sealed


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, original: Path) -> Path:
    """The service's artifact root: the served artifact and the damaged copies."""
    folder = tmp_path_factory.mktemp("artifacts")
    shutil.copytree(original, folder / "served")
    return folder


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[TestClient]:
    config = ServeConfig(root / "served", db=root / "events.sqlite", api_key=API_KEY)
    with TestClient(create_app(config)) as c:
        yield c


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _scorer_weights(art: Path) -> Path:
    return sorted((art / "scorer").rglob("*.safetensors"))[0]


def _reshape_and_reseal(art: Path) -> None:
    """Weights of another shape, with a manifest that vouches for them (a bad re-save)."""
    path = _scorer_weights(art)
    weights = load_file(path)
    name = next(k for k, v in weights.items() if v.dim() == 2)
    weights[name] = torch.zeros(weights[name].shape[0] + 3, weights[name].shape[1])
    save_file(weights, path)
    manifest = artifacts.read_manifest(art)
    manifest["files"] = artifacts.file_entries(art)
    artifacts.write_manifest(art, manifest)


def _retrieval_file(art: Path) -> Path:
    files = {p.name: p for p in (art / "retrieval").iterdir()}
    return files.get("items.faiss") or next(
        p for n, p in files.items() if n.endswith(".safetensors")
    )


DAMAGE: dict[str, tuple[Callable[[Path], object], Callable[[Path], str], str]] = {
    # case: (damage, the file's name as the error gives it, what the error says)
    "truncated weights": (
        lambda a: _truncate(_scorer_weights(a)),
        lambda a: _scorer_weights(a).relative_to(a).as_posix(),
        "truncated",
    ),
    "truncated seen.parquet": (
        lambda a: _truncate(a / "seen.parquet"),
        lambda a: "seen.parquet",
        "truncated",
    ),
    "truncated retrieval file": (
        lambda a: _truncate(_retrieval_file(a)),
        lambda a: _retrieval_file(a).relative_to(a).as_posix(),
        "truncated",
    ),
    "two-tower weights changed": (
        lambda a: (a / "retrieval" / "two_tower.safetensors").write_bytes(
            bytes(reversed((a / "retrieval" / "two_tower.safetensors").read_bytes()))
        ),
        lambda a: "retrieval/two_tower.safetensors",
        "has changed",
    ),
    "missing config": (
        lambda a: (a / "experiment.yaml").unlink(),
        lambda a: "experiment.yaml",
        "missing",
    ),
    "weights of another shape": (
        _reshape_and_reseal,
        lambda a: "scorer",
        "size mismatch",
    ),
}


@pytest.fixture(scope="module", params=list(DAMAGE))
def damaged(request: pytest.FixtureRequest, root: Path, original: Path) -> tuple[Path, str, str]:
    damage, name, says = DAMAGE[request.param]
    path = root / request.param.replace(" ", "_")
    shutil.copytree(original, path)
    expected = name(path)
    damage(path)
    return path, expected, says


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_manifest_lists_size_and_sha256_of_every_file(original: Path) -> None:
    manifest = artifacts.read_manifest(original)
    on_disk = {
        p.relative_to(original).as_posix()
        for p in original.rglob("*")
        if p.is_file() and p.name != "manifest.json" and ".sqlite" not in p.name
    }
    assert set(manifest["files"]) == on_disk  # the retrieval files too (built into it)
    assert any(k.startswith("retrieval/") for k in manifest["files"])
    for name, entry in manifest["files"].items():
        assert entry["size"] == (original / name).stat().st_size, name
        assert len(entry["sha256"]) == 64
    assert artifacts.problems(original) == []
    config = artifacts.Artifact.load(original).config_dict
    assert config["output"] == str(original.resolve())  # where it was written, not the file's


def test_python_load_names_the_bad_file(damaged: tuple[Path, str, str]) -> None:
    path, name, says = damaged
    with pytest.raises(ArtifactError) as e:
        Artifact.load(path).recommender()
    message = str(e.value)
    assert name in message and says in message


def test_cli_recommend_and_evaluate_exit_2_naming_it(damaged: tuple[Path, str, str]) -> None:
    path, name, says = damaged
    for args in (["recommend", str(path), "--user", "u1"], ["evaluate", str(path)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        text = _one_line(result.stderr)
        assert name in text and says in text, text
        assert "Traceback" not in result.output


def test_serve_start_up_exits_2_naming_it(damaged: tuple[Path, str, str]) -> None:
    path, name, says = damaged
    result = CliRunner().invoke(cli, ["serve", str(path), "--port", "1"])
    assert result.exit_code == 2, result.output
    text = _one_line(result.stderr)
    assert name in text and says in text and "Traceback" not in result.output


def test_reload_answers_400_naming_it_and_keeps_serving(
    client: TestClient, damaged: tuple[Path, str, str]
) -> None:
    path, name, says = damaged
    before = client.get("/health").json()["artifact"]
    r = client.post("/admin/reload", json={"artifact": path.name}, headers=AUTH)
    assert r.status_code == 400, r.text
    body = r.json()
    assert name in body["detail"] and says in body["detail"]
    assert client.get("/health").json()["artifact"] == before
    assert client.get("/recommend/u1", params={"k": 3}).status_code == 200


def test_reload_outside_the_root_is_refused(client: TestClient, original: Path) -> None:
    for asked in (str(original), "../" + original.name, "/etc"):
        r = client.post("/admin/reload", json={"artifact": asked}, headers=AUTH)
        assert r.status_code == 403, r.text
        assert "outside the artifact root" in r.json()["detail"]


def test_reload_never_writes_into_the_artifact(
    client: TestClient, root: Path, original: Path, retrieval_cache: Path
) -> None:
    """An artifact without retrieval files: reload builds them in the cache, not in it."""
    path = root / "no_retrieval"
    shutil.copytree(original, path)
    shutil.rmtree(path / "retrieval")
    manifest = artifacts.read_manifest(path)
    manifest["files"] = {k: v for k, v in manifest["files"].items() if "retrieval/" not in k}
    artifacts.write_manifest(path, manifest)
    path.chmod(0o555)  # read-only, as a deployed artifact may be
    try:
        before = {p: p.stat().st_mtime_ns for p in path.rglob("*")}
        r = client.post("/admin/reload", json={"artifact": "no_retrieval"}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert {p: p.stat().st_mtime_ns for p in path.rglob("*")} == before
    finally:
        path.chmod(0o755)
    built = list((retrieval_cache / "retrieval").glob("*/retrieval.json"))
    assert built and json.loads(built[0].read_text())["items"] > 0
    assert client.get("/recommend/u1", params={"k": 3}).status_code == 200
    served = client.post("/admin/reload", json={"artifact": "served"}, headers=AUTH)
    assert served.status_code == 200


def test_rewriting_an_artifact_leaves_a_live_event_store_in_place(
    original: Path, tmp_path: Path
) -> None:
    """`catalog add` rewrites an artifact a service may be serving: the event store beside
    it stays the same file, so events the service stores meanwhile are not lost."""
    from shoprec.serve import EventStore

    path = tmp_path / "art"
    shutil.copytree(original, path)
    store = EventStore(path / "events.sqlite")  # the service's connection, kept open
    store.append("u1", "i1", "view")
    art = Artifact.load(path)
    artifacts.save(
        path, config=art.config, scorer=art.scorer, items=art.items, seen=art.seen,
        metrics=art.metrics,
    )  # fmt: skip
    store.append("u1", "i2", "buy")  # after the rewrite, through the same connection
    store.close()
    reopened = EventStore(path / "events.sqlite")
    assert [e.item for e in reopened.recent()] == ["i1", "i2"]
    reopened.close()
    assert artifacts.problems(path) == [] and not (path / "retrieval").exists()
    assert not list(tmp_path.glob(".art*"))  # no temporary folder left behind
