"""Built-in dataset loaders, one module per dataset, and a registry by name.

Each module defines ``NAME``, ``SOURCE`` (where the original can be downloaded) and
``load(**kwargs) -> Dataset | TabularDataset``. Use :func:`load` to load by name.
"""

from __future__ import annotations

import importlib
from typing import Any

from shoprec.data.schema import Dataset, TabularDataset

#: name -> module (relative to this package). Aliases point at the same module.
REGISTRY: dict[str, str] = {
    "online_retail": "online_retail",
    "tmall": "tmall",
    "census_income": "census_income",
    "amazon_cross_domain": "amazon_cross_domain",
    "amazon_games": "amazon_games",
    "movielens_100k": "movielens_100k",
    "aliexpress": "fixtures",
    "ali_ccp": "fixtures",
}


def names() -> list[str]:
    """Names of the built-in datasets."""
    return list(REGISTRY)


def load(name: str, **kwargs: Any) -> Dataset | TabularDataset:
    """Load a built-in dataset by name.

    Args:
        name: one of :func:`names`.
        **kwargs: passed to the dataset module's ``load``.

    Raises:
        KeyError: for an unknown name (the message lists the known ones).
        DatasetNotFoundError: when the files are not under ``SHOPREC_DATA``.
    """
    if name not in REGISTRY:
        raise KeyError(f"unknown dataset '{name}'; built-in datasets are: {', '.join(REGISTRY)}")
    module = importlib.import_module(f"{__name__}.{REGISTRY[name]}")
    if REGISTRY[name] == "fixtures":
        return module.load(name, **kwargs)
    return module.load(**kwargs)
