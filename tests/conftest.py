import shutil

import pytest
import torch

from edgesnn import data, export, models, pipeline, threads, train

# One torch thread for the whole session, as the CLI's default: a test trains the same model alone as in the
# suite, whatever ran before it (an in-process CLI call used to switch the count for the tests after it).
threads.use(1)


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


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Briefly trained checkpoints of each model family, shared by the backend tests (they test
    arithmetic, not accuracy, and only read these folders)."""
    root = tmp_path_factory.mktemp("zoo")
    for name in ("mlp", "cnn", "resnet", "spikeformer"):
        pipeline.train_model(name, "digits", 3, root / name)
    return {name: root / name for name in ("mlp", "cnn", "resnet", "spikeformer")}


@pytest.fixture(scope="session")
def temporal_dense(tmp_path_factory):
    """temporal-dense trained 1 epoch on digits-events from the command line, as a user runs it. The
    temporal backend tests each copy it (:func:`temporal_dense_copy`) and export their own target."""
    from test_cli import edgesnn

    ck = tmp_path_factory.mktemp("temporal_dense") / "ck"
    r = edgesnn("train", "--model", "temporal-dense", "--data", "digits-events", "--epochs", 1, "--out", ck)
    assert r.returncode == 0, r.stderr
    return ck


def temporal_dense_copy(trained: "Path", folder: "Path") -> "Path":
    """A copy of the shared checkpoint in ``folder`` (so no test can change another's)."""
    shutil.copytree(trained, folder / "ck")
    return folder / "ck"
