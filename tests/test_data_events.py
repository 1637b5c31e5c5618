"""Event recordings through tonic, read from tiny files written here in each real on-disk format:
N-MNIST's 40-bit .bin events, tonic's DVS Gesture .npy rows, SHD's HDF5. The frames are checked against
binning spelled out in numpy (tonic's n_time_bins: T windows of (t_last - t_first) // T from the first
event, each counting t in [start, end); time_window: T windows of US from time 0)."""

import h5py
import numpy as np
import pytest

from edgesnn import data, data_events
from edgesnn.errors import EdgesnnError


def nmnist_bytes(events) -> bytes:
    """(x, y, p, t) -> Orchard's 5-byte records: x, y, p << 7 | t[22:16], t[15:8], t[7:0]."""
    out = bytearray()
    for x, y, p, t in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 127), (t >> 8) & 255, t & 255])
    return bytes(out)


def time_bins(t, bins):
    """The bin of each event under n_time_bins (-1: in no bin), as tonic slices them."""
    t = np.asarray(t, np.float64)
    t0 = t.min()
    w = (t.max() - t0) // bins
    b = np.full(len(t), -1)
    for i in range(bins):
        b[(t >= t0 + i * w) & (t < t0 + (i + 1) * w)] = i
    return b


def expected_frames(x, y, p, t, bins, shape):
    f = np.zeros((bins, *shape), np.float32)
    for xi, yi, pi, bi in zip(x, y, p, time_bins(t, bins)):
        if bi >= 0:
            f[bi, pi, yi, xi] += 1
    return f


NMNIST_SAMPLES = {  # (folder, digit, file): events (x, y, p, t in us)
    ("Train", 3, "00001.bin"): [(0, 0, 1, 0), (33, 5, 0, 100), (33, 5, 0, 150), (4, 33, 1, 1000), (2, 2, 0, 1999), (1, 1, 1, 2000)],
    ("Train", 7, "00002.bin"): [(5, 6, 0, 10), (5, 6, 0, 20), (7, 8, 1, 500), (9, 9, 1, 70000)],
    ("Test", 3, "00003.bin"): [(1, 2, 1, 5), (3, 4, 0, 6), (3, 4, 0, 400)],
}


@pytest.fixture
def nmnist_dir(tmp_path):
    root = tmp_path / "nmnist"
    for (split, digit, name), events in NMNIST_SAMPLES.items():
        (root / split / str(digit)).mkdir(parents=True, exist_ok=True)
        (root / split / str(digit) / name).write_bytes(nmnist_bytes(events))
    return root


def test_nmnist_bin_files_binned_as_tonic(nmnist_dir):
    ds = data.load(f"nmnist:{nmnist_dir}?bins=4", arrays=True, temporal=True)
    assert ds.name == "nmnist" and ds.steps == 4 and ds.in_shape == (4, 2, 34, 34)
    assert ds.y_train.tolist() == [3, 7] and ds.y_test.tolist() == [3]
    for xs, keys in ((ds.x_train, list(NMNIST_SAMPLES)[:2]), (ds.x_test, list(NMNIST_SAMPLES)[2:])):
        for got, key in zip(xs, keys):
            x, y, p, t = map(np.array, zip(*NMNIST_SAMPLES[key]))
            np.testing.assert_array_equal(got, expected_frames(x, y, p, t, 4, (2, 34, 34)))
    first = ds.x_train[0]
    assert first.sum() == 5 and first[0, 1, 0, 0] == 1 and first[0, 0, 5, 33] == 2 and first[2, 1, 33, 4] == 1
    assert first[3, 0, 2, 2] == 1 and first[1].sum() == 0  # t = 2000, the last event, ends the last window: not counted
    # tonic's save_to layout (save_to/NMNIST/Train/...) is read too
    nested = nmnist_dir.parent / "save_to"
    nested.mkdir()
    nmnist_dir.rename(nested / "NMNIST")
    again = data.load(f"nmnist:{nested}?bins=4", arrays=True, temporal=True)
    np.testing.assert_array_equal(again.x_train, ds.x_train)


def test_nmnist_overflow_marker_and_time_windows(tmp_path):
    """y = 240 marks a timestamp overflow: every later event is 2**13 us later (tonic's read_mnist_file)."""
    root = tmp_path / "n"
    for split in ("Train", "Test"):
        (root / split / "1").mkdir(parents=True)
        raw = nmnist_bytes([(1, 1, 0, 100), (0, 240, 0, 0), (2, 2, 1, 100)])
        (root / split / "1" / "a.bin").write_bytes(raw)
    ds = data.load(f"nmnist:{root}?window=4096&steps=3", arrays=True, temporal=True)
    frames = ds.x_train[0]  # events at 100 us and 100 + 8192 us: windows [0, 4096), [4096, 8192), [8192, 12288)
    assert frames.shape == (3, 2, 34, 34) and frames.sum() == 2
    assert frames[0, 0, 1, 1] == 1 and frames[2, 1, 2, 2] == 1


def test_nmnist_pool_and_bad_files(nmnist_dir):
    ds = data.load(f"nmnist:{nmnist_dir}?bins=4&pool=2", arrays=True, temporal=True)
    assert ds.in_shape == (4, 2, 17, 17) and ds.x_train[0][0, 0, 2, 16] == 2  # (33, 5) -> (16, 2)
    bad = nmnist_dir / "Train" / "3" / "00001.bin"
    bad.write_bytes(nmnist_bytes([(1, 1, 0, 5)]) + b"\x00\x01")
    with pytest.raises(EdgesnnError, match=r"00001.bin: not an N-MNIST .bin file \(7 bytes, not whole 5-byte events\)$"):
        data.load(f"nmnist:{nmnist_dir}", temporal=True)
    bad.write_bytes(nmnist_bytes([(1, 1, 0, 5), (40, 1, 0, 9)]))
    with pytest.raises(EdgesnnError, match=r"00001.bin: an event has x = 40, outside the nmnist sensor's 0..33$"):
        data.load(f"nmnist:{nmnist_dir}", temporal=True)
    (nmnist_dir / "Test" / "x").mkdir()
    with pytest.raises(EdgesnnError, match=r"Test/x: an N-MNIST class folder is named by its digit, 0..9$"):
        data.load(f"nmnist:{nmnist_dir}", temporal=True)


def test_event_spec_options_and_static_refusal(nmnist_dir, tmp_path):
    cases = {
        "?bins=0": "bad data option bins=0: an integer number of frames",
        "?bins=3&window=10": "give bins=T or window=US&steps=T, not both",
        "?window=10": "window=US needs steps=T",
        "?pool=3": "bad data option pool=3: a power of two in 1..64",
        "?size=4": "unknown data option 'size'; the options of event data are bins=T, or window=US&steps=T; pool=K",
        "?bins=2&bins=3": "data option bins given twice",
    }
    for query, message in cases.items():
        with pytest.raises(EdgesnnError, match=message.replace("?", r"\?").replace("(", r"\(")):
            data.load(f"nmnist:{nmnist_dir}{query}", temporal=True)
    with pytest.raises(EdgesnnError, match=r"has a time axis: samples \(N, T=7, 2, 128, 128\) are sequences for a "
                                           r"temporal model"):
        data.load(f"dvsgesture:{tmp_path}?bins=7")  # refused before any file is looked at
    with pytest.raises(EdgesnnError, match=r"^shd:\?bins=3: name the folder of the recordings: shd:DIR \(DIR/shd_train.h5"):
        data.load("shd:?bins=3", temporal=True)
    with pytest.raises(EdgesnnError, match=r"no Train/ folder; nmnist reads DIR/Train/<digit>/\*.bin"):
        data.load(f"nmnist:{tmp_path}", temporal=True)


def write_gesture(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.array(rows, np.float32).reshape(-1, 4))


def test_dvsgesture_npy_rows(tmp_path):
    """tonic's DVS Gesture files: rows (x, y, p, t in ms) in <split>/user<NN>_<lighting>/<label>.npy."""
    root = tmp_path / "DVSGesture"
    write_gesture(root / "ibmGestureTrain" / "user01_fluorescent" / "4.npy",
                  [(10, 20, 1, 0), (127, 0, 0, 1), (127, 0, 0, 1.5), (3, 3, 1, 2.9), (64, 64, 0, 3)])
    write_gesture(root / "ibmGestureTrain" / "user02_led" / "10.npy", [(1, 1, 0, 0.5)])
    write_gesture(root / "ibmGestureTest" / "user24_natural" / "0.npy", [(5, 6, 1, 0), (5, 6, 1, 0.2)])
    ds = data.load(f"dvsgesture:{tmp_path}?window=1000&steps=3", arrays=True, temporal=True)
    assert ds.in_shape == (3, 2, 128, 128) and ds.y_train.tolist() == [4, 10] and ds.y_test.tolist() == [0]
    f = ds.x_train[0]  # ms windows [0,1), [1,2), [2,3): the event at 3 ms falls after the last
    assert f.sum() == 4 and f[0, 1, 20, 10] == 1 and f[1, 0, 0, 127] == 2 and f[2, 1, 3, 3] == 1
    assert ds.x_train[1].sum() == 1 and ds.x_test[0][0, 1, 6, 5] == 2
    pooled = data.load(f"dvsgesture:{tmp_path}?bins=2&pool=4", arrays=True, temporal=True)
    assert pooled.in_shape == (2, 2, 32, 32) and pooled.x_train[0][:, 0, 0, 31].tolist() == [1, 1]  # 1.0 ms, 1.5 ms
    write_gesture(root / "ibmGestureTest" / "user24_natural" / "1.npy", [(5, 200, 1, 0)])
    with pytest.raises(EdgesnnError, match=r"1.npy: column y outside the DVS Gesture range 0..127$"):
        data.load(f"dvsgesture:{tmp_path}", temporal=True)
    np.save(root / "ibmGestureTest" / "user24_natural" / "1.npy", np.zeros((3, 5)))
    with pytest.raises(EdgesnnError, match=r"holds rows x, y, p, t \(n, 4\) of numbers, this one float64 \(3, 5\)$"):
        data.load(f"dvsgesture:{tmp_path}", temporal=True)
    np.save(root / "ibmGestureTest" / "user24_natural" / "1.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(EdgesnnError, match=r"1.npy: a DVS Gesture .npy holds rows"):
        data.load(f"dvsgesture:{tmp_path}", temporal=True)


def write_shd(path, recordings, labels):
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (len(recordings),), dtype=h5py.vlen_dtype(np.float32))
        units = f.create_dataset("spikes/units", (len(recordings),), dtype=h5py.vlen_dtype(np.uint16))
        for i, (t, u) in enumerate(recordings):
            times[i], units[i] = np.array(t, np.float32), np.array(u, np.uint16)
        f.create_dataset("labels", data=np.array(labels, np.uint8))
        f.create_dataset("extra/keys", data=np.array([b"k"] * 20))


def test_shd_hdf5(tmp_path):
    train = [([0.0, 0.25, 0.5, 0.75, 1.0], [0, 699, 699, 3, 5]), ([0.125, 0.5], [10, 10])]
    write_shd(tmp_path / "shd_train.h5", train, [19, 2])
    write_shd(tmp_path / "shd_test.h5", [([0.0, 0.001], [1, 2])], [7])
    ds = data.load(f"shd:{tmp_path}?bins=4", arrays=True, temporal=True)
    assert ds.in_shape == (4, 700) and ds.frame_shape == (700,) and ds.y_train.tolist() == [19, 2]
    for got, (t, u) in zip(ds.x_train, train):
        want = np.zeros((4, 700), np.float32)
        for unit, b in zip(u, time_bins(np.array(t, np.float32).astype(np.float64) * 1e6, 4)):
            if b >= 0:
                want[b, unit] += 1
        np.testing.assert_array_equal(got, want)
    assert ds.x_train[0].sum() == 4 and ds.x_train[0][1, 699] == 1
    pooled = data.load(f"shd:{tmp_path}?bins=4&pool=4", arrays=True, temporal=True)
    assert pooled.in_shape == (4, 175) and pooled.x_train[0][0, 0] == 1 and pooled.x_train[0][1, 174] == 1
    write_shd(tmp_path / "shd_test.h5", [([0.0], [700])], [7])
    with pytest.raises(EdgesnnError, match=r"shd_test.h5 recording 0: an event has x = 700, outside the shd sensor's 0..699$"):
        data.load(f"shd:{tmp_path}", temporal=True)
    write_shd(tmp_path / "shd_test.h5", [([0.0, np.nan], [1, 2])], [7])
    with pytest.raises(EdgesnnError, match=r"shd_test.h5: recording 0: spike times must be finite numbers of seconds"):
        data.load(f"shd:{tmp_path}", temporal=True)
    write_shd(tmp_path / "shd_test.h5", [([0.0], [1])], [20])
    with pytest.raises(EdgesnnError, match=r"labels must be the 20 SHD classes 0..19, found 20..20$"):
        data.load(f"shd:{tmp_path}", temporal=True)
    with h5py.File(tmp_path / "shd_test.h5", "w") as f:
        f.create_dataset("labels", data=np.zeros(1, np.uint8))
    with pytest.raises(EdgesnnError, match=r"no dataset 'spikes/times'; an SHD file holds spikes/times, spikes/units"):
        data.load(f"shd:{tmp_path}", temporal=True)
    (tmp_path / "shd_test.h5").write_bytes(b"not hdf5")
    with pytest.raises(EdgesnnError, match=r"shd_test.h5: not a readable HDF5 file"):
        data.load(f"shd:{tmp_path}", temporal=True)


def test_frames_are_checked_against_the_memory_budget(nmnist_dir, monkeypatch):
    monkeypatch.setenv("EDGESNN_MEMORY_LIMIT", "1000")
    with pytest.raises(EdgesnnError, match=r"3 recordings of 1000 frames \(2, 34, 34\)"):
        data_events.load(f"nmnist:{nmnist_dir}?bins=1000")
