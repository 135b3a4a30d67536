"""Where the real datasets live: ``SHOPREC_DATA``, defaulting to ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

from shoprec.errors import DatasetNotFoundError

ENV_VAR = "SHOPREC_DATA"


def data_root() -> Path:
    """The folder that holds the built-in datasets.

    ``$SHOPREC_DATA`` when set; otherwise ``../shared/data`` from the current directory, or,
    when that does not exist, from the project checkout this package was installed from.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    here = (Path.cwd() / ".." / "shared" / "data").resolve()
    if here.exists():
        return here
    checkout = Path(__file__).resolve().parents[3]  # src/shoprec/data/paths.py -> repo root
    candidate = (checkout / ".." / "shared" / "data").resolve()
    return candidate if candidate.exists() else here


def dataset_dir(folder: str, *, name: str, source: str, required: tuple[str, ...] = ()) -> Path:
    """Return ``data_root()/folder``, raising a clear error when it or a required file is missing.

    Args:
        folder: sub-folder of the data root.
        name: the dataset's name, for the message.
        source: where the original can be downloaded, for the message.
        required: files (relative to the folder) that must exist.
    """
    path = data_root() / folder
    if not path.is_dir():
        raise DatasetNotFoundError(name, path, source)
    for rel in required:
        if not (path / rel).exists():
            raise DatasetNotFoundError(name, path / rel, source)
    return path
