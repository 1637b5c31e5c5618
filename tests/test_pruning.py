"""QP-SNN's pruning criterion and its controls: SVS (lowest channel-rank score first) against random
and inverted-SVS channel choice, each a different set of channels, each still exporting."""

import json

import pytest
import torch
from typer.testing import CliRunner

from edgesnn import checkpoint, pipeline
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError
from edgesnn.quantize import Options, check_options
from edgesnn.quantize.pruning import CRITERIA, channel_groups, removal_orders

# half of every prunable group of the digits CNN (32 and 64 conv channels, 128 hidden) gone
WIDTHS = {"features.0": {"out": 16, "in": 1}, "features.1": {"out": 16}, "features.4": {"in": 16, "out": 32},
          "features.5": {"out": 32}, "head.0": {"in": 128, "out": 64}, "head.1": {"out": 64},
          "classifier": {"in": 64, "out": 10}}


@pytest.fixture(scope="module")
def cnn(trained):
    return checkpoint.load(trained["cnn"])[0]


def test_each_criterion_removes_other_channels(cnn, digits):
    calibration = digits.x_train[:256]
    groups = channel_groups(cnn, calibration)
    assert groups
    removed = {c: [set(order[: g.channels // 2].tolist()) for g, order in
                   zip(groups, removal_orders(cnn, groups, calibration, c, seed=0))] for c in CRITERIA}
    for g, svs, inverted in zip(groups, removed["svs"], removed["inverted-svs"]):
        assert len(svs) == len(inverted) == g.channels // 2
    assert removed["svs"] != removed["random"] and removed["svs"] != removed["inverted-svs"]
    assert removed["random"] != removed["inverted-svs"]
    for c in CRITERIA:  # every order is a permutation of the group's channels
        for g, order in zip(groups, removal_orders(cnn, groups, calibration, c)):
            assert sorted(order.tolist()) == list(range(g.channels))
    # random: seeded, so the same seed chooses the same channels
    again = removal_orders(cnn, groups, calibration, "random", seed=0)
    assert all(torch.equal(a, b) for a, b in zip(removal_orders(cnn, groups, calibration, "random", seed=0), again))
    assert any(not torch.equal(a, b) for a, b in zip(removal_orders(cnn, groups, calibration, "random", seed=1), again))


@pytest.mark.parametrize("criterion", ["random", "inverted-svs"])
def test_a_control_prunes_fine_tunes_and_exports(trained, tmp_path, criterion):
    out = tmp_path / "q"
    r = CliRunner().invoke(app, ["quantize", str(trained["cnn"]), "--method", "qpsnn", "--prune", "0.5",
                                 "--prune-criterion", criterion, "--epochs", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["options"]["prune_criterion"] == criterion
    widths = json.loads((out / "config.json").read_text())["quantization"]["widths"]
    assert widths == WIDTHS  # the same widths as SVS pruning: only which channels differs
    ir = pipeline.export_model(out, "ir", tmp_path / "ir")
    v = pipeline.verify(ir, "digits")
    assert v["samples"] == 450 and v["agreement"] >= 0.95


@pytest.mark.parametrize("opts,fragment", [
    (Options(prune=0.5, prune_criterion="largest"), "--prune-criterion must be one of svs, random, inverted-svs"),
    (Options(prune_criterion="random"), "--prune-criterion chooses the channels --prune removes"),
])
def test_bad_criteria_are_refused(opts, fragment):
    with pytest.raises(EdgesnnError, match=fragment):
        check_options("qpsnn", opts)
