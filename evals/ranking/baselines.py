"""The ranking suite's baselines, computed directly: most-popular, item-kNN, EASE^R, RP3beta, ALS."""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from evals.movielens import Split, popularity


class Baselines:
    """Most-popular and item-kNN over the training interactions, without Qdrant."""

    def __init__(self, split: Split, neighbors: int) -> None:
        counts = popularity(split)
        self.by_popularity = sorted(counts, key=lambda m: (-counts[m], m))
        self.items = sorted(counts)
        column = {m: i for i, m in enumerate(self.items)}
        users = sorted(split.train)
        rows, cols = [], []
        for row, user in enumerate(users):
            for r in split.train[user]:
                rows.append(row)
                cols.append(column[r.movie])
        x = csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)),
            shape=(len(users), len(self.items)),
        )
        x.sum_duplicates()
        x.data[:] = 1.0
        self.user_rows = {user: x.getrow(row) for row, user in enumerate(users)}
        self.similarity = _top_k_cosine(x, neighbors)

    def popular(self, seen: set[str], k: int) -> list[str]:
        return [m for m in self.by_popularity if m not in seen][:k]

    def item_knn(self, user: str, seen: set[str], k: int) -> list[str]:
        scores = np.asarray((self.user_rows[user] @ self.similarity).todense()).ravel()
        order = np.argsort(-scores, kind="stable")
        out = []
        for i in order:
            if scores[i] <= 0:
                break
            if self.items[i] not in seen:
                out.append(self.items[i])
                if len(out) == k:
                    break
        return out if len(out) == k else out + self.popular(seen | set(out), k - len(out))


def _top_k_cosine(x: csr_matrix, neighbors: int, chunk: int = 1024) -> csr_matrix:
    """Item-item cosine similarity keeping each item's `neighbors` most similar items."""
    norms = np.sqrt(np.asarray(x.power(2).sum(axis=0)).ravel())
    norms[norms == 0] = 1.0
    xt = x.T.tocsr()
    n = x.shape[1]
    rows, cols, vals = [], [], []
    for start in range(0, n, chunk):
        block = np.asarray((xt[start : start + chunk] @ x).todense(), dtype=np.float32)
        block /= norms[start : start + chunk, None] * norms[None, :]
        for offset in range(block.shape[0]):
            block[offset, start + offset] = 0.0  # an item is not its own neighbour
        keep = min(neighbors, n - 1)
        top = np.argpartition(-block, keep, axis=1)[:, :keep]
        for offset, columns in enumerate(top):
            values = block[offset, columns]
            mask = values > 0
            rows.extend([start + offset] * int(mask.sum()))
            cols.extend(columns[mask].tolist())
            vals.extend(values[mask].tolist())
    return csr_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float32)
