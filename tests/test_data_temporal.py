"""Data with a time axis: .npz sequences (N, T, C, H, W) and (N, T, F), the generated digits-events set
(where time matters: a baseline on the time-summed counts does far worse than one on the sequence), and
the one-line refusal every static consumer gives them."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from edgesnn import data, data_temporal
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError


@pytest.fixture(scope="module")
def events():
    return data.load("digits-events", arrays=True, temporal=True)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_with_time_axis_is_a_temporal_set(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, (40, 6, 2, 5, 4)).astype(np.float32)
    y = np.arange(40) % 4
    ds = data.load(_npz(tmp_path / "seq.npz", x=x, y=y), arrays=True, temporal=True)
    assert ds.steps == 6 and ds.in_shape == (6, 2, 5, 4) and ds.frame_shape == (2, 5, 4)
    assert len(ds.x_train) == 30 and len(ds.x_test) == 10 and sorted(np.bincount(ds.y_test)) == [2, 2, 3, 3]
    # the split keeps every sequence whole: each one is one of the file's, with its label
    for xs, ys in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        for s, label in zip(xs, ys):
            i = int(np.flatnonzero((x == s).all(axis=(1, 2, 3, 4)))[0])
            assert y[i] == label
    feats = data.load(_npz(tmp_path / "f.npz", x=rng.random((20, 7, 3)), y=np.arange(20) % 2), temporal=True)
    assert feats.steps == 7 and feats.frame_shape == (3,) and str(feats.x_train.dtype) == "torch.float32"


def test_npz_split_form_with_time_axis(tmp_path):
    x_tr, x_te = np.zeros((8, 3, 5), np.float32), np.ones((4, 3, 5), np.float32)
    spec = _npz(tmp_path / "s.npz", x_train=x_tr, y_train=np.arange(8) % 2, x_test=x_te, y_test=np.arange(4) % 2)
    ds = data.load(spec, arrays=True, temporal=True)
    assert ds.steps == 3 and ds.x_test.tolist() == x_te.tolist()
    static = data.load(_npz(tmp_path / "st.npz", x=np.zeros((8, 1, 4, 4)), y=np.arange(8) % 2), temporal=True)
    assert static.steps is None and static.frame_shape == (1, 4, 4)


def test_static_consumers_refuse_the_time_axis_in_one_line(tmp_path):
    spec = _npz(tmp_path / "seq.npz", x=np.zeros((10, 4, 1, 3, 3), np.float32), y=np.arange(10) % 2)
    with pytest.raises(EdgesnnError) as e:
        data.load(spec)
    assert str(e.value) == (f"{spec}: x must be (N, features) or (N, C, H, W), got shape (10, 4, 1, 3, 3): its axis 1 "
                            f"is time, (10, T=4, 1, 3, 3), which only a temporal model takes")
    with pytest.raises(EdgesnnError, match=r"^data set 'digits-events' has a time axis: samples \(1797, T=10, 1, 12, 12\)"):
        data.load("digits-events", arrays=True)
    result = CliRunner().invoke(app, ["train", "--model", "mlp", "--data", spec, "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "its axis 1 is time, (10, T=4, 1, 3, 3)" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    with pytest.raises(EdgesnnError, match=r"x must be .*or with a time axis \(N, T, features\) or \(N, T, C, H, W\), got "
                                           r"shape \(10, 2, 1, 3, 3, 1\)"):
        data.load(_npz(tmp_path / "six.npz", x=np.zeros((10, 2, 1, 3, 3, 1)), y=np.arange(10) % 2), temporal=True)


def test_digits_events_is_seeded_binary_and_balanced(events):
    x, y = data_temporal.digits_events_arrays()
    x2, y2 = data_temporal.digits_events_arrays()
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert x.shape == data_temporal.SHAPE and x.dtype == np.float32 and set(np.unique(x)) == {0.0, 1.0}
    assert not np.array_equal(data_temporal.digits_events_arrays(seed=1)[0], x)
    counts = np.bincount(y, minlength=20)
    assert counts.min() >= 70 and counts.sum() == 1797
    assert events.steps == 10 and events.num_classes == 20 and len(events.x_test) == 450
    assert np.bincount(events.y_test, minlength=20).min() >= 17  # stratified


def test_digits_events_moves_in_the_labelled_direction():
    """The events' mean column rises over time for labels 0..9 (moving right) and falls for 10..19."""
    x, y = data_temporal.digits_events_arrays()
    cols = np.arange(data_temporal.EVENTS_CANVAS)
    per_step = x[:, :, 0].sum(axis=2)  # (n, T, W): events per column
    first, last = per_step[:, :3].sum(axis=1), per_step[:, -3:].sum(axis=1)
    ok = (first.sum(1) > 0) & (last.sum(1) > 0)
    drift = (last * cols).sum(1) / np.maximum(last.sum(1), 1) - (first * cols).sum(1) / np.maximum(first.sum(1), 1)
    right = y < 10
    assert ok.mean() > 0.99
    assert (drift[ok & right] > 0).mean() > 0.98 and (drift[ok & ~right] < 0).mean() > 0.98


def test_time_matters_on_digits_events(events):
    """Logistic regression on the counts summed over time cannot see the direction (both directions
    visit the same positions for as long), so it scores far below one on the whole sequence."""
    from sklearn.linear_model import LogisticRegression

    scores = {}
    with threadpool_limits(1):
        for name, features in (("sum", lambda a: data_temporal.sum_time(a) / events.steps),
                               ("sequence", data_temporal.flatten_time)):
            model = LogisticRegression(C=0.01, max_iter=200).fit(features(events.x_train), events.y_train)
            scores[name] = model.score(features(events.x_test), events.y_test)
    assert scores["sequence"] >= 0.6 and scores["sum"] <= 0.4, scores
    assert scores["sequence"] - scores["sum"] >= 0.25, scores


def test_layout_and_recorded_specs(tmp_path):
    x = np.arange(2 * 3 * 2 * 4 * 5).reshape(2, 3, 2, 4, 5)
    assert np.array_equal(data.to_nhwc(x), x.transpose(0, 1, 3, 4, 2))
    assert data.to_nhwc(np.zeros((2, 3, 7))).shape == (2, 3, 7)
    assert data.recorded("digits-events") == "digits-events"
    (tmp_path / "n").mkdir()
    spec = f"nmnist:{tmp_path}/./n?bins=5"
    assert data.recorded(spec) == f"nmnist:{(tmp_path / 'n').resolve()}?bins=5"
