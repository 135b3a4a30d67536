"""shoprec: multi-task and transfer learning recommendations for online shops."""

__version__ = "0.1.0"
