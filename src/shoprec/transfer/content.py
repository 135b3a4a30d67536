"""History features of the content model: each event's (or user's) most recent items.

:class:`~shoprec.models.content.ContentModel` pools a user's ``history_len`` most recent
items into the user vector; these two functions build that ``history`` input from events
grouped by user in time order (:func:`recent_items` for training rows, :func:`last_items`
for scoring a user after their last event).
"""

from __future__ import annotations

import numpy as np


def recent_items(user: np.ndarray, item: np.ndarray, length: int, pad: int) -> np.ndarray:
    """For each event, the same user's ``length`` previous items, most recent first.

    Args:
        user: ``(E,)`` user of each event; events grouped by user, in time order.
        item: ``(E,)`` item of each event.
        length: how many previous items to keep.
        pad: the value where there are fewer (the model's ``n_items``).

    Returns:
        ``(E, length)`` int64.

    Example:
        >>> recent_items(np.array([0, 0, 0, 1]), np.array([5, 6, 7, 8]), 2, 9).tolist()
        [[9, 9], [5, 9], [6, 5], [9, 9]]
    """
    user, item = np.asarray(user), np.asarray(item, dtype=np.int64)
    out = np.full((len(user), length), pad, dtype=np.int64)
    for k in range(1, length + 1):
        same = np.zeros(len(user), bool)
        same[k:] = user[k:] == user[:-k]
        src = np.flatnonzero(same)
        out[src, k - 1] = item[src - k]
    return out


def last_items(
    user: np.ndarray, item: np.ndarray, n_users: int, length: int, pad: int
) -> np.ndarray:
    """Each user's ``length`` most recent items, most recent first: ``(n_users, length)``.

    Args:
        user: ``(E,)`` events grouped by user, in time order.
        item: ``(E,)`` their items.
        n_users: number of users (rows).
        length: items kept per user.
        pad: filler where a user has fewer (the model's ``n_items``).
    """
    user, item = np.asarray(user), np.asarray(item, dtype=np.int64)
    out = np.full((n_users, length), pad, dtype=np.int64)
    if len(user) == 0:
        return out
    last = np.ones(len(user), bool)
    last[:-1] = user[1:] != user[:-1]
    ends = np.flatnonzero(last)
    hist = recent_items(user, item, length, pad)  # (E, L), previous items of each event
    out[user[ends], 0] = item[ends]
    out[user[ends], 1:] = hist[ends, : length - 1]
    return out
