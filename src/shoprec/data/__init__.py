"""Data layer: canonical tables, loaders, splits, encoding and the simulated shop."""

from shoprec.data.errors import DataError, DatasetNotFoundError, ShoprecError
from shoprec.data.schema import (
    Behavior,
    Catalog,
    Dataset,
    DropReport,
    Interactions,
    TabularDataset,
    Users,
)

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
