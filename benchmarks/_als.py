"""implicit's ALS, fitted the same way by every benchmark that uses it as a baseline."""

from __future__ import annotations

import time
from typing import Any


def fit_als(
    matrix: Any, params: dict[str, Any], seed: int = 0, threads: int = 1
) -> tuple[Any, float]:
    """Fit ``implicit.als.AlternatingLeastSquares`` on a (users x items) CSR matrix.

    Args:
        matrix: ``scipy.sparse.csr_matrix`` of confidences (users x items).
        params: ``factors``, ``regularization``, ``alpha``, ``iterations``.
        seed: ALS's ``random_state``.
        threads: ALS's own threads; BLAS is held to one thread (implicit asks for it).

    Returns:
        The fitted model and the seconds the fit took.
    """
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    model = AlternatingLeastSquares(
        factors=params["factors"],
        regularization=params["regularization"],
        alpha=params["alpha"],
        iterations=params["iterations"],
        random_state=seed,
        num_threads=threads,
        calculate_training_loss=False,
    )
    tick = time.perf_counter()
    with threadpool_limits(1, "blas"):
        model.fit(matrix, show_progress=False)
    return model, time.perf_counter() - tick
