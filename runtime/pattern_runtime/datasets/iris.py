"""Iris (scikit-learn load_iris, 150 rows): the stratified train/test split the iris models use."""

from __future__ import annotations

from functools import cache

SEED = 0
TEST_SIZE = 0.3
LABELS = ("setosa", "versicolor", "virginica")


@cache
def load_split():
    """(X_train, X_test, y_train, y_test, feature_names), float64 as sklearn ships them."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    data = load_iris()
    assert tuple(data.target_names) == LABELS
    split = train_test_split(data.data, data.target, test_size=TEST_SIZE, stratify=data.target, random_state=SEED)
    return (*split, tuple(data.feature_names))
