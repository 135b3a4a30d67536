"""Training: the one fit loop and task-loss balancing strategies (``weighting``)."""
