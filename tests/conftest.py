import pytest
import torch

from edgesnn import data, export, models, train


@pytest.fixture(scope="session")
def digits():
    return data.digits()


@pytest.fixture(scope="session")
def small_cnn_graph(digits):
    """A briefly trained CNN and its IR (shared by the IR tests)."""
    torch.manual_seed(0)
    m = models.build("cnn", models.default_kwargs("cnn", digits.in_shape, 10, 4))
    train.train(m, digits, 10)
    return m, export.export(m, digits.x_train[:512])
