"""Trivial baselines: what a linear model and a nearest-neighbour lookup score on a data set's own
test split. A spiking model, compressed or not, means something only next to these: on sklearn's
digits logistic regression already scores 0.9689 and 3-NN 0.9867.

Fixed settings, no tuning, on the flattened pixels as the models see them: sklearn's
``LogisticRegression`` (lbfgs, L2, C = 1, up to 1000 iterations) and ``KNeighborsClassifier``
(3 neighbours, Euclidean), each on one BLAS thread, so the numbers do not depend on the machine.
"""

from __future__ import annotations

import warnings

from edgesnn.data import Dataset

MAX_ELEMENTS = 4_000_000  # train samples x features: MNIST-5k at 28x28 is 2.9 M, about 1 s of fitting
NAMES = {"logistic_regression": "logistic regression", "knn3": "3-NN"}


def small_enough(ds: Dataset) -> bool:
    """Cheap enough to compute with every training (train's metrics.json)."""
    return len(ds.x_train) * ds.x_train[0].numel() <= MAX_ELEMENTS


def baselines(ds: Dataset) -> dict[str, float]:
    """Test accuracy of each baseline, trained on the training split: ``{"logistic_regression": .., "knn3": ..}``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from threadpoolctl import threadpool_limits

    x_train, x_test = (x.reshape(len(x), -1).numpy() for x in (ds.x_train, ds.x_test))
    y_train, y_test = ds.y_train.numpy(), ds.y_test.numpy()
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a stated setting: 1000 iterations, converged or not
        logreg = LogisticRegression(C=1.0, max_iter=1000).fit(x_train, y_train)
        knn = KNeighborsClassifier(n_neighbors=3).fit(x_train, y_train)
        return {"logistic_regression": float(logreg.score(x_test, y_test)),
                "knn3": float(knn.score(x_test, y_test))}


def describe(scores: dict[str, float], samples: int | None = None) -> str:
    """One line for a results table: ``Baselines on the same split: logistic regression 0.9689, 3-NN 0.9867.``"""
    where = f"the same {samples}-sample test split" if samples else "the same split"
    return f"Baselines on {where}: " + ", ".join(f"{NAMES[k]} {v:.4f}" for k, v in scores.items()) + "."
