"""The HTTP service and its web page: ``shoprec serve ARTIFACT`` or :func:`create_app`."""

from shoprec.serve.app import ServeConfig, create_app
from shoprec.serve.store import EventStore

__all__ = ["EventStore", "ServeConfig", "create_app"]
