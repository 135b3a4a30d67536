"""Evaluation: pure metric functions (``metrics``); protocols and reports build on them."""

from shoprec.evaluate.metrics import (
    CSR,
    accuracy,
    auc,
    gauc,
    grouped_auc,
    hit_rate_at_k,
    logloss,
    macro_f1,
    mae,
    mrr,
    ndcg_at_k,
    rank_of_targets,
    ranking_metrics,
    recall_at_k,
    rmse,
    sampled_ranks,
)

__all__ = [
    "CSR",
    "accuracy",
    "auc",
    "gauc",
    "grouped_auc",
    "hit_rate_at_k",
    "logloss",
    "macro_f1",
    "mae",
    "mrr",
    "ndcg_at_k",
    "rank_of_targets",
    "ranking_metrics",
    "recall_at_k",
    "rmse",
    "sampled_ranks",
]
