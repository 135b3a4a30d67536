"""The HTTP service and its web page: ``shoprec serve ARTIFACT`` or :func:`create_app`."""

from shoprec.serve.app import ServeConfig, ServeLimits, create_app, worker_app
from shoprec.serve.store import EventStore

__all__ = ["EventStore", "ServeConfig", "ServeLimits", "create_app", "worker_app"]
