"""Data layer: canonical tables, loaders, splits, encoding and the simulated shop."""

from shoprec.data.schema import (
    Behavior,
    Catalog,
    Dataset,
    DropReport,
    Interactions,
    TabularDataset,
    Users,
)
from shoprec.errors import DataError, DatasetNotFoundError, ShoprecError

__all__ = [
    "Behavior",
    "Catalog",
    "DataError",
    "Dataset",
    "DatasetNotFoundError",
    "DropReport",
    "Interactions",
    "ShoprecError",
    "TabularDataset",
    "Users",
]
