"""A toy target for tests/test_targets.py and docs/adding-a-target.md: it writes the IR file's bytes as a
JSON list of integers (model.json) and verifies by reading them back and running the graph they make
against the IR written beside it, every output integer. Nothing in edgesnn names it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from edgesnn.errors import EdgesnnError
from edgesnn.targets import Option, Target, integer_result

FILE, IR_FILE, FORMAT = "model.json", "model.ir", "edgesnn-toy"
INDENT = Option("toy_indent", "spaces of indentation in model.json (0: one line)", type=int, default=0,
                strict=True, recipe="when-set")


def read_graph(path: Path):
    """The graph a model.json holds (a damaged file is one line)."""
    from edgesnn.ir import load as load_ir

    try:
        doc = json.loads(Path(path).read_text())
        data = bytes(doc["ir_bytes"])
        if doc.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EdgesnnError(f"{path}: not a toy model file ({e})") from None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / IR_FILE).write_bytes(data)
        return load_ir(Path(tmp) / IR_FILE)


class ToyTarget(Target):
    name, help, artifact, describes = "toy", "the IR as JSON integers", "model.json", "a toy model file (.json)"
    file, files = FILE, (FILE, IR_FILE)
    export_options = (INDENT,)

    def prepare(self, options, spell=None):
        if options["toy_indent"] < 0:
            raise EdgesnnError(f"{(spell or str)('toy_indent')}: must be at least 0, got {options['toy_indent']}")
        return options

    def export(self, graph, out, board, options, calibration):
        from edgesnn.files import atomic_files

        with atomic_files(out, self.files) as tmp:
            graph.save(tmp / IR_FILE)
            data = list((tmp / IR_FILE).read_bytes())
            (tmp / FILE).write_text(json.dumps({"format": FORMAT, "ir_bytes": data},
                                               indent=options["toy_indent"] or None))
        return Path(out) / FILE

    def recognizes(self, path):
        return path.suffix == ".json" and path.name == FILE

    def verify(self, artifact, data, *, ckpt, ir, samples, trust_code, options):
        from edgesnn import artifact_data
        from edgesnn import data as datasets
        from edgesnn.device import beside_ir

        graph, ir = beside_ir(artifact, ir)
        spec, ds = artifact_data.load(artifact, data, arrays=True, graph=graph)
        x = datasets.to_nhwc(ds.x_test)[:samples]
        xq = graph.quantize_input(x)
        got = read_graph(artifact).run_integer(xq)
        want = graph.run_integer(xq)
        return integer_result(artifact, "toy JSON reader", [got[o] for o in graph.outputs],
                              [want[o] for o in graph.outputs], ir=str(ir), data=spec)

    def profile_graph(self, artifact, trust_code):
        return read_graph(artifact), {"file_bytes": artifact.stat().st_size}


TOY = ToyTarget()
