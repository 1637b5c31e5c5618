"""Cases: one hostile or damaged file, the real command that reads it, and what may happen.

A case is generated from (seed, index) alone, so any failure reproduces with
``scripts/fuzz_cli.py --seed S --case N --kind K --attack A``. Kinds are the file types edgesnn
reads; attacks are the classes of issue 17:

- ``bomb``: YAML alias bombs, zip bombs, headers declaring huge sizes (safetensors, .npy, HDF5);
- ``depth``: JSON/YAML nested up to 100,000 deep, deep NIR graphs and nested subgraphs;
- ``size``: huge declared shapes, counts and dimensions (IR, config, NIR, boards, data);
- ``type``: wrong types, missing and unknown keys in every JSON/YAML field, NIR datasets retyped;
- ``values``: NaN/Inf weights and data, negative counts, tampered numbers;
- ``flip`` / ``truncate``: byte-level damage;
- ``encoding``: non-UTF-8 and re-encoded text, hostile file names (newline, escape sequences);
- ``exec``: a file naming a factory that would run code (issue 17's critical finding).

Paths in a case are relative to its folder; ``A`` stands for the artifact's folder (or, for
the ``encoding`` attack, a hostile name in its place).
"""

from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from hostile import formats as F
from hostile import mutate as M

VICTIM = "victim.txt"  # every case folder holds it; no command may touch it
PREVIOUS_JSON = {"previous": "output"}
PWN_MODULE = "PWNMOD.py"  # importable from the case folder; importing it writes PWNED
PWN_CODE = b"open('PWNED', 'w').write('code from a file ran')\ndef build(**kw):\n    raise SystemExit(0)\n"

KINDS = ("checkpoint", "ir", "nir", "tflite", "recipe", "board", "npz", "project", "lava", "loihi2", "manifest")
ATTACKS = ("bomb", "depth", "size", "type", "values", "flip", "truncate", "encoding", "exec")


@dataclass
class Case:
    id: str
    kind: str
    attack: str
    mutation: str
    argv: list[str]
    files: list[tuple[str, bytes | Path]]
    outputs: list[str] = field(default_factory=list)  # paths the command writes (holding a previous output)
    output_files: list[str] = field(default_factory=list)  # what a folder output must hold after exit 0
    run_output: bool = False  # the output is an `edgesnn run` folder (checked for consistency instead)
    scratch: list[str] = field(default_factory=list)  # paths the command may change (a build folder)
    zero: str = "ok"  # exit 0: "ok" (the mutation may leave the file valid), "never", "required"
    expect: str | None = None  # a fragment the error line must hold
    timeout: float = 60.0
    env: dict = field(default_factory=dict)
    reproduce: str = ""
    previous_json: dict = field(default_factory=lambda: dict(PREVIOUS_JSON))


class Base:
    """The valid artifacts (tests/hostile/artifacts.py) and their contents, read once."""

    def __init__(self, paths: dict[str, Path]):
        self.p = paths
        ck = paths["checkpoint"]
        self.config = json.loads((ck / "config.json").read_text())
        self.weights = (ck / "model.safetensors").read_bytes()
        self.ir = paths["ir"].read_bytes()
        self.nir = paths["nir"].read_bytes()
        self.tflite = paths["tflite"].read_bytes()
        self.recipe_text = paths["recipe"].read_text()
        self.recipe = yaml.safe_load(self.recipe_text)
        self.board_text = paths["board"].read_text()
        self.board = yaml.safe_load(self.board_text)
        self.npz = paths["npz"].read_bytes()
        with np.load(paths["npz"]) as f:
            self.x, self.y = f["x"], f["y"]
        self.json = {name: json.loads(path.read_text()) for name, path in (
            ("project", paths["mcu"] / "project.json"), ("lava", paths["lava"] / "lava.json"),
            ("loihi2", paths["lava"] / "loihi2.json"), ("manifest", paths["run"] / "manifest.json"))}
        self.ir_header, self.ir_body = F.split_safetensors(self.ir)
        self.ir_graph = json.loads(self.ir_header["__metadata__"]["edgesnn_ir"])
        self.nir_paths = F.h5_paths(self.nir)


# ---------------------------------------------------------------- mutations shared by JSON files


def _json_bytes(obj) -> bytes:
    return M.dumps(obj).encode("utf-8", "surrogatepass")


def _deep_insert(tree, rng: random.Random, depth: int) -> tuple[bytes, str]:
    """The JSON of ``tree`` with a value ``depth`` deep at a random path (text spliced in: dumping
    such a value would recurse)."""
    sentinel = "\x00DEEP\x00"
    path = rng.choice(M.paths(tree)) if isinstance(tree, (dict, list)) else ()
    t = M.put(json.loads(json.dumps(tree)), path, sentinel)
    text = json.dumps(t).replace(json.dumps(sentinel), M.deep_json_text(depth, rng.choice(["list", "dict"])), 1)
    return text.encode(), f"{'/'.join(map(str, path)) or '<root>'}: nested {depth:,} deep"


def _numeric(tree, rng: random.Random, pool) -> tuple[object, str, tuple]:
    """A numeric leaf (or any leaf) set to a value from ``pool``."""
    all_paths = [p for p in M.paths(tree) if p]
    nums = [p for p in all_paths if isinstance(M.get(tree, p), (int, float)) and not isinstance(M.get(tree, p), bool)]
    path = rng.choice(nums or all_paths or [()])
    v = rng.choice(pool)
    old = M.get(tree, path)
    return M.put(json.loads(json.dumps(tree)), path, v), f"{'/'.join(map(str, path))}: {M._short(old)} -> {v}", path


def json_file_mutation(tree, raw: bytes, rng: random.Random, attack: str) -> tuple[bytes, str]:
    """Bytes of a damaged JSON file for a generic attack class."""
    if attack == "type":
        t, d = M.tree_mutation(tree, rng)
        return _json_bytes(t), d
    if attack == "size":
        t, d, _ = _numeric(tree, rng, M.SIZES)
        return _json_bytes(t), d
    if attack == "values":
        t, d, _ = _numeric(tree, rng, M.NEGATIVES + [float("nan"), float("inf"), 0, -0.0])
        return _json_bytes(t), d
    if attack == "depth":
        return _deep_insert(tree, rng, rng.choice([100_000, 100_000, 5_000, 1_000, 65]))
    if attack == "bomb":  # JSON has no aliases: a huge flat array or string instead
        if rng.random() < 0.5:
            t = M.put(json.loads(json.dumps(tree)), rng.choice(M.paths(tree)), [0] * 3_000_000)
            return _json_bytes(t), "a value replaced by a 3,000,000-element array"
        t = M.put(json.loads(json.dumps(tree)), rng.choice(M.paths(tree)), "x" * 20_000_000)
        return _json_bytes(t), "a value replaced by a 20 MB string"
    if attack == "flip":
        return M.byte_mutation(raw, rng)
    if attack == "truncate":
        return M.truncation(raw, rng)
    if attack == "encoding":
        return M.encoding_mutation(raw.decode(), rng)
    raise ValueError(attack)


# ---------------------------------------------------------------- command builders


def _json_out(c: dict) -> None:
    c["argv"] += ["--json", "r.json"]
    c["files"].append(("r.json", _json_bytes(PREVIOUS_JSON) + b"\n"))
    c["outputs"].append("r.json")


def _dir_out(c: dict, previous: Path, must_hold: list[str]) -> None:
    c["argv"] += ["--out", "out"]
    c["files"].append(("out", previous))
    c["outputs"].append("out")
    c["output_files"] = must_hold


def _run_cmd(recipe: str, out: str, extra_file: tuple[str, Path]) -> dict:
    """``edgesnn run RECIPE --out OUT``: OUT is a run folder, checked as one whatever the outcome."""
    c = _cmd(["run", recipe, "--out", out])
    c["files"].append(extra_file)
    c["outputs"].append(out)
    c["run_output"] = True
    c["timeout"] = 120.0
    return c


def _cmd(argv: list[str]) -> dict:
    return {"argv": list(argv), "files": [], "outputs": [], "output_files": [], "scratch": [], "timeout": 60.0}


def _pick(rng: random.Random, weighted: list[tuple[int, object]]):
    total = sum(w for w, _ in weighted)
    r = rng.randrange(total)
    for w, item in weighted:
        if r < w:
            return item
        r -= w
    raise AssertionError


def commands(kind: str, base: Base, rng: random.Random) -> dict:
    """A command that reads ``kind`` (paths with ``A``), with its previous outputs."""
    p = base.p
    if kind == "checkpoint":
        which = _pick(rng, [(3, "inspect"), (3, "export-ir"), (1, "export-tflite"), (2, "verify"), (1, "quantize")])
        if which == "inspect":
            c = _cmd(["inspect", "A"])
            _json_out(c)
        elif which == "export-ir":
            c = _cmd(["export", "A", "--target", "ir"])
            _dir_out(c, p["ir"].parent, ["model.ir"])
        elif which == "export-tflite":
            c = _cmd(["export", "A", "--target", "tflite"])
            _dir_out(c, p["tflite"].parent, ["model.tflite", "model.ir"])
        elif which == "verify":
            c = _cmd(["verify", "v/model.ir", "--checkpoint", "A"])
            c["files"].append(("v/model.ir", p["ir"]))
            _json_out(c)
        else:
            c = _cmd(["quantize", "A", "--method", "ternary", "--epochs", "1"])
            _dir_out(c, p["checkpoint"], ["config.json", "model.safetensors"])
            c["timeout"] = 120.0
        return c
    if kind == "ir":
        which = _pick(rng, [(3, "inspect"), (3, "verify"), (2, "profile-host"), (1, "profile-mcu")])
        c = _cmd({"inspect": ["inspect", "A/model.ir"], "verify": ["verify", "A/model.ir"],
                  "profile-host": ["profile", "A/model.ir", "--board", "host"],
                  "profile-mcu": ["profile", "A/model.ir", "--board", "rp2040"]}[which])
        _json_out(c)
        return c
    if kind == "nir":
        which = _pick(rng, [(3, "import"), (1, "import-float"), (2, "verify")])
        if which == "verify":
            c = _cmd(["verify", "A/model.nir"])
            _json_out(c)
        else:
            c = _cmd(["import", "A/model.nir"] + (["--float", "--timesteps", "4"] if which == "import-float" else []))
            _dir_out(c, p["imported"], ["config.json", "model.safetensors"])
        c["files"].append(("A/model.ir", p["ir"]))
        return c
    if kind == "tflite":
        c = _cmd(["verify", "A/model.tflite"] if rng.random() < 0.6 else
                 ["profile", "A/model.tflite", "--board", "raspberry-pi-4"])
        c["files"].append(("A/model.ir", p["ir"]))
        _json_out(c)
        return c
    if kind == "recipe":  # the damaged recipe, run into an earlier run's folder
        return _run_cmd("A/recipe.yaml", "run", ("run", p["run"]))
    if kind == "board":
        if rng.random() < 0.5:
            c = _cmd(["boards", "A/board.yaml"])
        else:
            c = _cmd(["profile", "v/model.ir", "--board", "A/board.yaml"])
            c["files"].append(("v/model.ir", p["ir"]))
        _json_out(c)
        return c
    if kind == "npz":
        which = _pick(rng, [(3, "verify"), (1, "profile"), (2, "train"), (1, "import")])
        if which in ("verify", "profile"):
            c = _cmd(["verify", "v/model.ir", "--data", "A/data.npz"] if which == "verify" else
                     ["profile", "v/model.ir", "--board", "host", "--data", "A/data.npz"])
            c["files"].append(("v/model.ir", p["ir"]))
            _json_out(c)
        elif which == "train":
            c = _cmd(["train", "--model", "mlp", "--data", "A/data.npz", "--epochs", "1"])
            _dir_out(c, p["checkpoint"], ["config.json", "model.safetensors"])
            c["timeout"] = 120.0
        else:
            c = _cmd(["import", "v/model.nir", "--data", "A/data.npz"])
            c["files"] += [("v/model.nir", p["nir"]), ("v/model.ir", p["ir"])]
            _dir_out(c, p["imported"], ["config.json", "model.safetensors"])
        return c
    if kind == "project":
        if rng.random() < 0.75:  # profiling a project builds it: --trust-code half the time, to get past that
            c = _cmd(["profile", "A", "--board", "rp2040"] + (["--trust-code"] if rng.random() < 0.5 else []))
            c["scratch"].append("A/build")
        else:
            c = _cmd(["verify", "A", "--samples", "2", "--trust-code"])
            c["scratch"].append("A/build")
        _json_out(c)
        return c
    if kind in ("lava", "loihi2"):
        if kind == "lava" and rng.random() < 0.2:
            c = _cmd(["verify", "A", "--samples", "1"])
            c["timeout"] = 120.0
        else:
            c = _cmd(["profile", "A", "--board", "loihi2"])
        _json_out(c)
        return c
    if kind == "manifest":  # a valid recipe, run into the run folder whose manifest is damaged
        return _run_cmd("r/recipe.yaml", "A", ("r/recipe.yaml", p["recipe"]))
    raise ValueError(kind)


# ---------------------------------------------------------------- per-kind mutations
# Each returns (files placed relative to the case folder, description, exit-0 rule).

EXEC_SPECS = [
    ("torch:os.system", {"command": "touch PWNED"}),
    ("numpy:os.system", {"command": "touch PWNED"}),
    ("edgesnn.models.custom:os.system", {"command": "touch PWNED"}),
    ("edgesnn.models.custom:importlib.import_module", {"name": "PWNMOD"}),
    ("torch:save", {"obj": 1, "f": "PWNED"}),
    ("numpy:save", {"file": "PWNED", "arr": [1]}),
    ("edgesnn.files:write_bytes", {"path": "PWNED", "data": "x"}),
    ("PWNMOD:build", {}),
    ("torch.hub:os.system", {"command": "touch PWNED"}),
    ("sklearn:os.system", {"command": "touch PWNED"}),
]


def _exec_spec(rng: random.Random) -> tuple[str, dict]:
    spec, kwargs = rng.choice(EXEC_SPECS)
    return spec, dict(kwargs)


def mutate_checkpoint(base: Base, rng: random.Random, attack: str):
    cfg, raw_cfg = base.config, (base.p["checkpoint"] / "config.json").read_bytes()
    if attack == "exec":
        spec, kwargs = _exec_spec(rng)
        t = {**cfg, "model": spec, "kwargs": kwargs}
        return [("A/config.json", _json_bytes(t)), (PWN_MODULE, PWN_CODE)], f"model {spec} {kwargs}", "never"
    if attack == "size":
        key = rng.choice(["num_classes", "hidden", "channels", "in_shape", "input_shape", "D"])
        big = rng.choice([2**21, 2**31, 2**40, 2**62])
        t = json.loads(json.dumps(cfg))
        if key in ("channels", "in_shape", "input_shape"):
            target = t if key == "input_shape" else t["kwargs"]
            at = rng.randrange(len(target[key]))
            target[key] = [big if i == at else v for i, v in enumerate(target[key])]
        else:
            (t if key == "D" else t["kwargs"])[key] = big
        return [("A/config.json", _json_bytes(t))], f"{key} set to {big} (2^{big.bit_length() - 1})", "never"
    if attack == "bomb":
        header, body = F.split_safetensors(base.weights)
        how = rng.choice(["length", "tensor", "entries"])
        if how == "length":
            n = rng.choice([2**63, 2**40, len(base.weights), 100 << 20])
            return [("A/model.safetensors", struct.pack("<Q", n) + base.weights[8:])], \
                f"safetensors header length field {n}", "never"
        if how == "tensor":
            name = rng.choice(sorted(k for k in header if k != "__metadata__"))
            count = rng.choice([2**40, 2**48, 2**62])
            header[name] = {"dtype": "F32", "shape": [count], "data_offsets": [0, 4 * count]}
            return [("A/model.safetensors", F.join_safetensors(header, body))], \
                f"tensor {name} declares {count} float32", "never"
        for i in range(200_000):
            header[f"t{i}"] = {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
        return [("A/model.safetensors", F.join_safetensors(header, body))], "200,000 empty tensors in the header", "ok"
    if attack == "values":
        header, body = F.split_safetensors(base.weights)
        from safetensors.numpy import load, save

        arrays = load(base.weights)
        name = rng.choice(sorted(k for k, v in arrays.items() if v.dtype.kind == "f"))
        a = arrays[name].copy()
        v = rng.choice([np.nan, np.inf, -np.inf, 1e38, -1e38])
        a.flat[rng.randrange(a.size)] = v
        arrays[name] = a
        return [("A/model.safetensors", save(arrays, metadata=header.get("__metadata__")))], \
            f"{name}: one element {v}", "ok"
    if attack in ("flip", "truncate") and rng.random() < 0.5:
        w = base.weights
        raw, d = M.byte_mutation(w, rng, F.header_range(w)) if attack == "flip" else M.truncation(w, rng)
        return [("A/model.safetensors", raw)], f"model.safetensors: {d}", "ok" if attack == "flip" else "never"
    if attack == "encoding" and rng.random() < 0.3:
        return [("A/config.json", b"")], "config.json emptied", "never"
    raw, d = json_file_mutation(cfg, raw_cfg, rng, attack)
    return [("A/config.json", raw)], f"config.json: {d}", "never" if attack == "depth" and "65 deep" not in d else "ok"


def _ir_bytes(base: Base, graph=None, header=None, metadata=None, body=None) -> bytes:
    h = json.loads(json.dumps(header if header is not None else base.ir_header))
    meta = dict(h.get("__metadata__", {})) if isinstance(h, dict) else {}
    if graph is not None:
        meta["edgesnn_ir"] = graph if isinstance(graph, str) else M.dumps(graph)
    if metadata:
        meta.update(metadata)
    if isinstance(h, dict):
        h["__metadata__"] = meta
    return F.join_safetensors(h, base.ir_body if body is None else body)


def _graph_copy(base: Base) -> dict:
    return json.loads(json.dumps(base.ir_graph))


def huge_padding_ir(base: Base, pad: int = 65536) -> bytes:
    """The base IR cut to its first conv, with padding ``pad`` on every side and the output shape
    that padding implies: a consistent graph whose one activation is tens of GiB."""
    g = _graph_copy(base)
    conv = g["ops"][0]
    conv["padding"] = [pad] * 4
    h, w, _ = g["tensors"][conv["inputs"][0]]["shape"]
    kh, kw = conv["weight_shape"][1:3]
    out = g["tensors"][conv["output"]]
    out["shape"] = [h + 2 * pad - kh + 1, w + 2 * pad - kw + 1, out["shape"][2]]
    g["ops"] = [conv]
    g["tensors"] = {k: v for k, v in g["tensors"].items() if k in (g["input"], conv["output"])}
    g["outputs"] = [conv["output"]]
    header = {k: v for k, v in base.ir_header.items() if k == "__metadata__" or k.startswith(conv["name"] + ".")}
    # the kept tensors' bytes, re-packed from offset 0
    body, new = b"", {}
    for k, v in sorted(header.items()):
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        new[k] = {**v, "data_offsets": [len(body), len(body) + b - a]}
        body += base.ir_body[a:b]
    new["__metadata__"] = header["__metadata__"]
    return _ir_bytes(base, graph=g, header=new, body=body)


def mutate_ir(base: Base, rng: random.Random, attack: str):
    if attack == "exec":
        spec, kwargs = _exec_spec(rng)
        g = _graph_copy(base)
        g.setdefault("meta", {}).setdefault("source", {})["checkpoint"] = "../ck"
        cfg = {**base.config, "model": spec, "kwargs": kwargs}
        return [("A/model.ir", _ir_bytes(base, graph=g)), ("ck", base.p["checkpoint"]),
                ("ck/config.json", _json_bytes(cfg)), (PWN_MODULE, PWN_CODE)], \
            f"the IR names ../ck, whose config names {spec}", "ok"
    if attack == "type":
        where = _pick(rng, [(4, "graph"), (1, "tensors"), (1, "metadata")])
        if where == "graph":
            t, d = M.tree_mutation(base.ir_graph, rng)
            return [("A/model.ir", _ir_bytes(base, graph=t))], f"graph JSON: {d}", "ok"
        if where == "tensors":
            t, d = M.tree_mutation(base.ir_header, rng)
            return [("A/model.ir", F.join_safetensors(M.dumps(t), base.ir_body))], f"safetensors header: {d}", "ok"
        key = rng.choice(["edgesnn_ir_version", "format", "edgesnn_ir"])
        v = M.hostile_value(rng)
        return [("A/model.ir", _ir_bytes(base, metadata={key: v if isinstance(v, str) else M.dumps(v)}))], \
            f"metadata {key} -> {M._short(v)}", "ok"
    if attack == "size":
        how = _pick(rng, [(6, "numeric"), (1, "ops"), (2, "pad")])
        if how == "numeric":
            t, d, _ = _numeric(base.ir_graph, rng, M.SIZES)
            return [("A/model.ir", _ir_bytes(base, graph=t))], f"graph JSON: {d}", "ok"
        if how == "pad":
            pad = rng.choice([1024, 65536])
            return [("A/model.ir", huge_padding_ir(base, pad))], f"first conv alone, padding {pad}, its output to match", "never" if pad == 65536 else "ok"
        g = _graph_copy(base)
        last = g["outputs"][0]
        n = rng.choice([100_001, 150_000])
        g["ops"] += [{"kind": "reshape", "name": f"r{i}", "inputs": [last if i == 0 else f"r{i - 1}"], "output": f"r{i}"}
                     for i in range(n)]
        return [("A/model.ir", _ir_bytes(base, graph=g))], f"{n:,} reshape ops appended", "never"
    if attack == "depth":
        where = _pick(rng, [(3, "graph"), (1, "whole"), (1, "header")])
        depth = rng.choice([100_000, 100_000, 5_000, 1_000])
        if where == "whole":
            return [("A/model.ir", _ir_bytes(base, graph=M.deep_json_text(depth)))], f"graph JSON {depth:,} deep", "never"
        if where == "graph":
            raw, d = _deep_insert(base.ir_graph, rng, depth)
            return [("A/model.ir", _ir_bytes(base, graph=raw.decode()))], f"graph JSON: {d}", "never"
        h = json.loads(json.dumps(base.ir_header))
        name = rng.choice(sorted(k for k in h if k != "__metadata__"))
        text = json.dumps({**h, name: "\x00DEEP\x00"}).replace('"\\u0000DEEP\\u0000"', M.deep_json_text(depth))
        return [("A/model.ir", F.join_safetensors(text, base.ir_body))], f"safetensors entry {name} {depth:,} deep", "never"
    if attack == "bomb":
        h = json.loads(json.dumps(base.ir_header))
        if rng.random() < 0.5:
            n = rng.choice([2**63, 2**40, 100 << 20])
            return [("A/model.ir", struct.pack("<Q", n) + base.ir[8:])], f"header length field {n}", "never"
        name = rng.choice(sorted(k for k in h if k != "__metadata__"))
        count = rng.choice([2**40, 2**48])
        h[name] = {"dtype": "I32", "shape": [count], "data_offsets": [0, 4 * count]}
        return [("A/model.ir", F.join_safetensors(h, base.ir_body))], f"tensor {name} declares {count} int32", "never"
    if attack == "values":
        g = _graph_copy(base)
        if rng.random() < 0.6:
            name = rng.choice(sorted(g["tensors"]))
            key = rng.choice(["scale", "zero_point", "spike_D"])
            v = rng.choice([float("nan"), float("inf"), 0.0, -1.0, 1e-45, 2**40, -(2**40)])
            g["tensors"][name][key] = v
            return [("A/model.ir", _ir_bytes(base, graph=g))], f"tensor {name} {key} -> {v}", "ok"
        a, b = F.header_range(base.ir)
        raw, d = M.byte_mutation(base.ir, rng, (b, len(base.ir)))  # in the arrays
        return [("A/model.ir", raw)], f"array bytes: {d}", "ok"
    if attack == "flip":
        raw, d = M.byte_mutation(base.ir, rng, F.header_range(base.ir))
        return [("A/model.ir", raw)], d, "ok"
    if attack == "truncate":
        raw, d = M.truncation(base.ir, rng)
        return [("A/model.ir", raw)], d, "never"
    if attack == "encoding":
        n = struct.unpack("<Q", base.ir[:8])[0]
        i = rng.randrange(8, 8 + n)
        bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00"])
        raw = base.ir[:i] + bad + base.ir[i + len(bad):]
        return [("A/model.ir", raw)], f"header byte {i} replaced by {bad!r}", "ok"
    raise ValueError(attack)


def _nir_edit(base: Base, edit) -> bytes:
    return F.h5_edit(base.nir, edit)


def mutate_nir(base: Base, rng: random.Random, attack: str):
    datasets = [p for p, t in base.nir_paths if t == "dataset"]
    meta_path = "node/metadata/edgesnn"
    if attack == "type":
        how = _pick(rng, [(4, "dataset"), (1, "drop"), (1, "nodetype"), (2, "edges"), (2, "metadata")])
        if how == "metadata":
            import h5py

            with h5py.File(base.p["nir"], "r") as f:
                program = json.loads(f[meta_path][()].decode())
            t, d = M.tree_mutation(program, rng)
            text = M.dumps(t)
            return [("A/model.nir", _nir_edit(base, lambda f: F.h5_replace(f, meta_path, text)))], f"metadata: {d}", "ok"
        if how == "drop":
            name = rng.choice([p for p, _ in base.nir_paths])
            return [("A/model.nir", _nir_edit(base, lambda f: f.__delitem__(name)))], f"{name} deleted", "ok"
        if how == "nodetype":
            name = rng.choice([p for p in datasets if p.endswith("/type")])
            v = rng.choice(["Unknown", "", "NIRGraph", "Conv2d", "a\nerror: forged", "IF", "Output"])
            return [("A/model.nir", _nir_edit(base, lambda f: F.h5_replace(f, name, v)))], f"{name} -> {v!r}", "ok"
        if how == "edges":
            import h5py

            with h5py.File(base.p["nir"], "r") as f:
                edges = [[a.decode(), b.decode()] for a, b in f["node/edges"][()]]
            op = rng.choice(["dangling", "self", "cycle", "empty", "dup", "shape"])
            if op == "dangling":
                edges.append([rng.choice(edges)[0], "nowhere"])
            elif op == "self":
                n = rng.choice(edges)[1]
                edges.append([n, n])
            elif op == "cycle":
                edges.append([edges[-1][1], edges[0][0]])
            elif op == "empty":
                edges = []
            elif op == "dup":
                edges = edges * 50
            value = np.array(edges, dtype=object) if op != "shape" else np.array([e[0] for e in edges], dtype=object)
            if op == "empty":
                value = np.zeros((0, 2), dtype=h5py.string_dtype())

            def edit(f, value=value):
                del f["node/edges"]
                f.create_dataset("node/edges", data=value, dtype=h5py.string_dtype())

            return [("A/model.nir", _nir_edit(base, edit))], f"edges: {op}", "ok"
        name = rng.choice(datasets)
        v = rng.choice([np.float32(np.nan), np.int64(-5), np.zeros((0,), np.float32), np.ones((2, 2, 2, 2, 2), np.float32),
                        "text", np.array([1 + 2j]), np.array([True]), np.int64(2**62), np.ones(3, np.int8),
                        np.array([b"x"], dtype=object)])
        desc = v if isinstance(v, str) else f"{np.asarray(v).dtype}{list(np.shape(v))}"

        def edit(f, name=name, v=v):
            import h5py

            if name in f:
                del f[name]
            if isinstance(v, np.ndarray) and v.dtype == object:
                f.create_dataset(name, data=v, dtype=h5py.string_dtype())
            else:
                F.h5_replace(f, name, v)

        return [("A/model.nir", _nir_edit(base, edit))], f"{name} -> {desc}", "ok"
    if attack == "size":
        how = _pick(rng, [(2, "weight"), (1, "edges"), (2, "shape"), (1, "state")])
        if how == "weight":
            name = rng.choice([p for p in datasets if p.endswith("/weight")])
            rank = len(_h5_shape(base, name))
            shape = rng.choice([(65536, 65536, 3, 3), (2**31, 1, 3, 3)] if rank == 4 else
                               [(16384, 32768), (2**20, 2**20), (65536, 65536)])
            return [("A/model.nir", _nir_edit(base, lambda f: F.h5_replace(f, name, shape=shape, dtype="f4")))], \
                f"{name} declared {shape} (never written)", "never"
        if how == "edges":
            n = rng.choice([2**28, 2**24])

            def edit(f, n=n):
                import h5py

                del f["node/edges"]
                f.create_dataset("node/edges", shape=(n, 2), dtype=h5py.string_dtype(), chunks=(4096, 2))

            return [("A/model.nir", _nir_edit(base, edit))], f"edges declared ({n}, 2) (never written)", "never"
        if how == "shape":
            name = rng.choice([p for p in datasets if p.endswith(("/shape", "/input_shape", "/input_type"))])
            old = _h5_value(base, name)
            v = np.array([rng.choice([2**20, 2**31, 2**40, -1, 0]) for _ in np.atleast_1d(old)], np.int64)
            return [("A/model.nir", _nir_edit(base, lambda f: F.h5_replace(f, name, v)))], f"{name} -> {v.tolist()}", "ok"
        name = rng.choice([p for p in datasets if p.endswith(("/v_threshold", "/r", "/v_reset", "/bias"))])
        shape = (2**16, 2**16)
        return [("A/model.nir", _nir_edit(base, lambda f: F.h5_replace(f, name, shape=shape, dtype="f4")))], \
            f"{name} declared {shape} (never written)", "never"
    if attack == "depth":
        how = _pick(rng, [(2, "metadata"), (2, "chain"), (1, "nested")])
        if how == "metadata":
            depth = rng.choice([100_000, 5_000, 1_000])
            text = M.deep_json_text(depth)
            return [("A/model.nir", _nir_edit(base, lambda f: F.h5_replace(f, meta_path, text)))], \
                f"metadata JSON {depth:,} deep", "ok"
        if how == "chain":
            n = rng.choice([1500, 3000])
            return [("A/model.nir", _chain_bytes(n))], f"a chain of {n} Scale nodes", "ok"
        depth = rng.choice([200, 2000])
        return [("A/model.nir", _nested_graphs(base, depth))], f"subgraphs nested {depth} deep", "ok"
    if attack == "values":
        name = rng.choice([p for p in datasets if p.endswith(("/weight", "/bias", "/v_threshold", "/r"))])
        v = rng.choice([np.nan, np.inf, -np.inf, 1e38])
        a = np.array(_h5_value(base, name))
        a.flat[rng.randrange(a.size)] = v
        return [("A/model.nir", _nir_edit(base, lambda f: F.h5_replace(f, name, a)))], f"{name}: one element {v}", "ok"
    if attack == "flip":
        raw, d = M.byte_mutation(base.nir, rng)
        return [("A/model.nir", raw)], d, "ok"
    if attack == "truncate":
        raw, d = M.truncation(base.nir, rng)
        return [("A/model.nir", raw)], d, "ok"
    if attack == "encoding":
        if rng.random() < 0.5:
            bad = rng.choice([b"\xff\xfe{", b'{"a": "\xc3\x28"}', b"\xed\xa0\x80"])

            def edit(f, bad=bad):
                del f[meta_path]
                f.create_dataset(meta_path, data=np.bytes_(bad))

            return [("A/model.nir", _nir_edit(base, edit))], f"metadata bytes {bad!r}", "ok"
        name = rng.choice([p for p, t in base.nir_paths if t == "group" and p.count("/") == 2])
        new = name.rsplit("/", 1)[0] + "/" + M.hostile_name(rng).replace("/", "_").encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return [("A/model.nir", _nir_edit(base, lambda f: f.move(name, new)))], f"node {name} renamed {new!r}", "ok"
    raise ValueError(attack)


def _h5_value(base: Base, name: str):
    import h5py

    with h5py.File(base.p["nir"], "r") as f:
        return f[name][()]


def _h5_shape(base: Base, name: str):
    import h5py

    with h5py.File(base.p["nir"], "r") as f:
        return f[name].shape


_CHAINS: dict[int, bytes] = {}


def _chain_bytes(n: int) -> bytes:
    if n not in _CHAINS:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="hostile-chain") as tmp:
            _CHAINS[n] = F.nir_chain(n, Path(tmp) / "c.nir").read_bytes()
    return _CHAINS[n]


def _nested_graphs(base: Base, depth: int) -> bytes:
    """The base graph with one extra node: a NIRGraph holding a NIRGraph ... ``depth`` deep."""
    import h5py

    def edit(f):
        g = f["node/nodes"].create_group("nest")
        for _ in range(depth):
            g.create_dataset("type", data="NIRGraph", dtype=h5py.string_dtype())
            g.create_dataset("edges", data=np.zeros((0, 2), dtype=object), dtype=h5py.string_dtype())
            g = g.create_group("nodes").create_group("inner")
        g.create_dataset("type", data="Scale", dtype=h5py.string_dtype())
        g.create_dataset("scale", data=np.ones(1, np.float32))

    return _nir_edit(base, edit)


def mutate_tflite(base: Base, rng: random.Random, attack: str):
    raw = base.tflite
    if attack == "flip":
        out, d = M.byte_mutation(raw, rng, (0, 256))
        return [("A/model.tflite", out)], d, "ok"
    if attack == "truncate":
        out, d = M.truncation(raw, rng)
        return [("A/model.tflite", out)], d, "ok"
    if attack == "size":  # flatbuffer offsets and vector lengths are u32: poke huge ones
        b = bytearray(raw)
        at = sorted(rng.randrange(0, len(b) - 4) & ~3 for _ in range(rng.choice([1, 3, 10])))
        for i in at:
            b[i:i + 4] = struct.pack("<I", rng.choice([0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 0x10000000]))
        return [("A/model.tflite", bytes(b))], f"huge u32s at {at[:6]}", "ok"
    if attack == "encoding":
        return [("A/model.tflite", raw[: len(raw) // 3])], "truncated to a third", "ok"
    raise ValueError(attack)


def _recipe_text(tree) -> bytes:
    """YAML text of a (mutated) tree; a tree nested deeper than PyYAML's representer can recurse is
    written as JSON, which is YAML too."""
    try:
        text = yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)
    except RecursionError:
        text = json.dumps(tree, ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


def _tame_epochs(tree):
    """A mutation may give epochs a huge positive value: a valid request for days of training,
    not a hostile file. Such values become 2."""
    if isinstance(tree, dict):
        for section in ("train", "quantize"):
            s = tree.get(section)
            if isinstance(s, dict) and isinstance(s.get("epochs"), (int, float)) and not isinstance(s.get("epochs"), bool) \
                    and s["epochs"] > 2:
                s["epochs"] = 2
    return tree


def yaml_mutation(tree, text: str, rng: random.Random, attack: str, kind: str) -> tuple[bytes, str, str]:
    if attack == "bomb":
        how = _pick(rng, [(3, "alias"), (1, "merge"), (1, "wide")])
        if how == "alias":
            levels, fan = rng.choice([(9, 9), (6, 10), (20, 2), (3, 1000)])
            return F.yaml_alias_bomb(levels, fan).encode(), f"alias bomb {levels} levels x {fan}", "never"
        if how == "merge":
            lines = ["a0: &a0 {k0: 1}"] + [f"a{i}: &a{i} {{<<: *a{i - 1}, k{i}: [*a{i - 1}, *a{i - 1}]}}" for i in range(1, 30)]
            return ("\n".join(lines) + "\nname: merge\n").encode(), "merge-key alias bomb 30 levels", "never"
        n = rng.choice([200_000, 1_000_000])
        return F.yaml_wide(n).encode(), f"a flat list of {n:,} scalars", "never"
    if attack == "depth":
        if rng.random() < 0.7:
            depth = rng.choice([100_000, 5_000, 1_000])
            return F.yaml_deep(depth, True).encode(), f"flow sequence {depth:,} deep", "never"
        depth = rng.choice([100, 300])
        return F.yaml_deep(depth, False).encode(), f"block mappings {depth} deep", "never"
    if attack == "type":
        t, d = M.tree_mutation(tree, rng)
        return _recipe_text(_tame_epochs(t)), d, "ok"
    if attack in ("size", "values"):
        t, d, path = _numeric(tree, rng, M.SIZES if attack == "size" else M.NEGATIVES + [float("nan"), 0])
        if kind == "recipe" and path and path[-1] == "epochs":
            t = _tame_epochs(t)
        return _recipe_text(t), d, "ok"
    if attack == "flip":
        raw, d = M.byte_mutation(text.encode(), rng)
        return raw, d, "ok"
    if attack == "truncate":
        raw, d = M.truncation(text.encode(), rng)
        return raw, d, "ok"
    if attack == "encoding":
        raw, d = M.encoding_mutation(text, rng)
        return raw, d, "ok"
    raise ValueError(attack)


def mutate_recipe(base: Base, rng: random.Random, attack: str):
    if attack == "exec":
        spec, kwargs = _exec_spec(rng)
        t = json.loads(json.dumps(base.recipe))
        t["model"] = {"name": spec, "kwargs": kwargs}
        return [("A/recipe.yaml", _recipe_text(t)), (PWN_MODULE, PWN_CODE)], f"model {spec} {kwargs}", "never"
    if attack == "size" and rng.random() < 0.5:
        t = json.loads(json.dumps(base.recipe))
        big = rng.choice([2**21, 2**31, 2**40])
        t["model"]["kwargs"]["hidden"] = [big]
        return [("A/recipe.yaml", _recipe_text(t))], f"model.kwargs.hidden [{big}]", "never"
    raw, d, zero = yaml_mutation(base.recipe, base.recipe_text, rng, attack, "recipe")
    return [("A/recipe.yaml", raw)], d, zero


def mutate_board(base: Base, rng: random.Random, attack: str):
    raw, d, zero = yaml_mutation(base.board, base.board_text, rng, attack, "board")
    return [("A/board.yaml", raw)], d, zero


def _npy(arr: np.ndarray) -> bytes:
    import io

    out = io.BytesIO()
    np.save(out, arr, allow_pickle=True)
    return out.getvalue()


def mutate_npz(base: Base, rng: random.Random, attack: str):
    x, y = base.x, base.y
    if attack == "bomb":
        how = _pick(rng, [(2, "zip"), (2, "header"), (1, "members")])
        if how == "zip":
            return [("A/data.npz", F.npz_zip_bomb())], "zip bomb: x.npy inflates to 8 GiB", "never"
        if how == "header":
            shape = rng.choice([(2**48,), (2**24, 2**24), (2**20, 1, 2**14, 2**14)])
            member = rng.choice(["x", "y"])
            hdr = F.npy_bytes({"descr": "<f4" if member == "x" else "<i8", "fortran_order": False, "shape": shape})
            members = {"x.npy": _npy(x), "y.npy": _npy(y), f"{member}.npy": hdr}
            return [("A/data.npz", F.npz_bytes(members))], f"{member}.npy header declares {shape}", "never"
        members = {"x.npy": _npy(x), "y.npy": _npy(y), **{f"m{i}.npy": _npy(np.zeros(1)) for i in range(5000)}}
        return [("A/data.npz", F.npz_bytes(members))], "5,000 extra members", "ok"
    if attack == "size":
        how = rng.choice(["labels", "features", "zero-features", "samples", "rank"])
        if how == "labels":
            yy = y.copy()
            yy[rng.randrange(len(yy))] = rng.choice([2**31, 2**40, 2**62])
            return [("A/data.npz", F.npz_arrays(x=x, y=yy))], f"one label {int(yy.max())}", "never"
        if how == "features":  # header declares far more than the member holds
            hdr = F.npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (400, 2**20)}, x.tobytes())
            return [("A/data.npz", F.npz_bytes({"x.npy": hdr, "y.npy": _npy(y)}))], "x declared (400, 2^20), short data", "never"
        if how == "zero-features":
            return [("A/data.npz", F.npz_arrays(x=np.zeros((400, 0), np.float32), y=y))], "x with 0 features", "never"
        if how == "samples":
            n = rng.choice([0, 1, 3, 4, 5])
            return [("A/data.npz", F.npz_arrays(x=x[:n], y=y[:n]))], f"{n} samples", "ok"
        xx = x.reshape(400, 1, 1, 8, 8) if rng.random() < 0.5 else x.reshape(400, 64, 1)
        return [("A/data.npz", F.npz_arrays(x=xx, y=y))], f"x of shape {xx.shape}", "never"
    if attack == "type":
        how = rng.choice(["xstr", "yfloat", "object", "complex", "bool", "struct", "fortran", "missing", "y2d",
                          "split-mismatch", "extra"])
        if how == "xstr":
            arrays = {"x": x.astype("U4"), "y": y}
        elif how == "yfloat":
            arrays = {"x": x, "y": y.astype(np.float32) + 0.5}
        elif how == "object":
            return [("A/data.npz", F.npz_bytes({"x.npy": _npy(np.array([1, "a", None] * 3, dtype=object)),
                                                "y.npy": _npy(y)}))], "x is a pickled object array", "never"
        elif how == "complex":
            arrays = {"x": x.astype(np.complex64), "y": y}
        elif how == "bool":
            arrays = {"x": x > 0.5, "y": y.astype(bool)}
        elif how == "struct":
            arrays = {"x": np.zeros(400, dtype=[("a", "<f4"), ("b", "<i4")]), "y": y}
        elif how == "fortran":
            arrays = {"x": np.asfortranarray(x), "y": y}
        elif how == "missing":
            arrays = {rng.choice(["x", "y"]): x}
        elif how == "y2d":
            arrays = {"x": x, "y": np.stack([y, y], 1)}
        elif how == "split-mismatch":
            arrays = {"x_train": x[:300], "y_train": y[:300], "x_test": x[300:, :, :4], "y_test": y[300:]}
        else:
            arrays = {"x": x, "y": y, "x_train": x[:10]}
        return [("A/data.npz", F.npz_arrays(**arrays))], f"type confusion: {how}", "ok"
    if attack == "values":
        xx = x.copy()
        v = rng.choice([np.nan, np.inf, -np.inf, 1e38, -1e38])
        xx.flat[rng.randrange(xx.size)] = v
        if rng.random() < 0.3:
            yy = y.copy()
            yy[0] = -1
            return [("A/data.npz", F.npz_arrays(x=x, y=yy))], "a negative label", "never"
        return [("A/data.npz", F.npz_arrays(x=xx, y=y))], f"one x element {v}", "never" if not np.isfinite(v) else "ok"
    if attack == "depth":
        depth = rng.choice([3000, 4900])
        shape_text = "(" * depth + "1," + ")" * depth
        hdr = F.npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_text + ", }")
        return [("A/data.npz", F.npz_bytes({"x.npy": hdr, "y.npy": _npy(y)}))], f"x.npy header shape nested {depth} deep", "never"
    if attack == "flip":
        raw, d = M.byte_mutation(base.npz, rng)
        return [("A/data.npz", raw)], d, "ok"
    if attack == "truncate":
        raw, d = M.truncation(base.npz, rng)
        return [("A/data.npz", raw)], d, "ok"
    if attack == "encoding":
        hdr = _npy(x)
        i = hdr.index(b"descr")
        bad = hdr[:i] + b"\xff\xfe" + hdr[i + 2:]
        return [("A/data.npz", F.npz_bytes({"x.npy": bad, "y.npy": _npy(y)}))], "x.npy header with bytes 0xff 0xfe", "never"
    raise ValueError(attack)


def _artifact_json(kind: str, base: Base, rng: random.Random, attack: str):
    folder = {"project": "mcu", "lava": "lava", "loihi2": "lava", "manifest": "run"}[kind]
    name = {"project": "project.json", "lava": "lava.json", "loihi2": "loihi2.json", "manifest": "manifest.json"}[kind]
    tree = base.json[kind]
    raw0 = (base.p[folder] / name).read_bytes()
    if kind == "manifest" and attack == "values":  # a stale or hostile entry
        t = json.loads(json.dumps(tree))
        a = rng.choice(t["artifacts"])
        how = rng.choice(["path", "sha", "stage", "dup", "stage-key"])
        if how == "path":
            a["path"] = rng.choice(["../victim.txt", "/etc/passwd", ".", "", "checkpoint", "ir/../../victim.txt",
                                    ".hidden", "a\nerror: forged", "ir"])
        elif how == "sha":
            a["sha256"] = "0" * 64
        elif how == "stage":
            a["stage"] = rng.choice(sorted(t["stages"]) + ["nonexistent"])
        elif how == "dup":
            t["artifacts"].append(dict(a))
        else:
            k = rng.choice(sorted(t["stages"]))
            t["stages"][k] = "0" * 64
        return [(f"A/{name}", _json_bytes(t))], f"artifact entry {how}: {M._short(a)}", "ok"
    if attack == "values" and kind in ("project", "loihi2"):
        # a tampered top-level count or size, or a negative input/output shape, is nonsense that
        # must not succeed (issue 17: loihi2.json's cores -5 was reported as fitting)
        t, d, path = _numeric(tree, rng, M.NEGATIVES + [float("nan")])
        tampered = len(path) == 1 or (kind == "project" and path[:1] in (("input",), ("output",)) and "shape" in path)
        return [(f"A/{name}", _json_bytes(t))], f"{name}: {d}", "never" if tampered else "ok"
    raw, d = json_file_mutation(tree, raw0, rng, attack)
    # project.json and loihi2.json are read by every command here: too deep a document is refused
    zero = "never" if attack == "depth" and kind in ("project", "loihi2") and "65 deep" not in d else "ok"
    return [(f"A/{name}", raw)], f"{name}: {d}", zero


def artifact_folder(kind: str, base: Base) -> list[tuple[str, Path]]:
    """The valid artifact each kind's mutation is laid over."""
    p = base.p
    return {
        "checkpoint": [("A", p["checkpoint"])], "ir": [], "nir": [], "tflite": [], "recipe": [], "board": [],
        "npz": [], "project": [("A", p["mcu"])], "lava": [("A", p["lava"])], "loihi2": [("A", p["lava"])],
        "manifest": [("A", p["run"])],
    }[kind]


MUTATORS = {
    "checkpoint": (mutate_checkpoint, ATTACKS),
    "ir": (mutate_ir, ATTACKS),
    "nir": (mutate_nir, ("depth", "size", "type", "values", "flip", "truncate", "encoding")),
    "tflite": (mutate_tflite, ("size", "flip", "flip", "truncate", "encoding")),
    "recipe": (mutate_recipe, ATTACKS),
    "board": (mutate_board, ("bomb", "depth", "size", "type", "values", "flip", "truncate", "encoding")),
    "npz": (mutate_npz, ("bomb", "depth", "size", "type", "values", "flip", "truncate", "encoding")),
    **{k: (lambda base, rng, attack, k=k: _artifact_json(k, base, rng, attack),
           ("depth", "size", "type", "type", "values", "flip", "truncate", "encoding", "bomb"))
       for k in ("project", "lava", "loihi2", "manifest")},
}


# ---------------------------------------------------------------- generation


def _rename(rel: str, name: str) -> str:
    return name if rel == "A" else name + rel[1:] if rel.startswith("A/") else rel


def generate(seed: int, index: int, kinds=KINDS, attacks=None, kind: str | None = None,
             attack: str | None = None, base: Base | None = None) -> Case:
    """Case ``index`` of the run seeded ``seed``. The kind is drawn from ``kinds`` and the attack
    from those the kind has (within ``attacks``) by their own generators, so the case itself
    depends only on (seed, index, kind, attack): pass ``kind`` and ``attack`` to reproduce it."""
    kind = kind or random.Random(f"{seed}:{index}:kind").choice(list(kinds))
    mutate, own = MUTATORS[kind]
    choices = [a for a in own if attacks is None or a in attacks] or list(own)
    attack = attack or random.Random(f"{seed}:{index}:attack").choice(choices)
    rng = random.Random(f"{seed}:{index}:{kind}:{attack}")
    files, desc, zero = mutate(base, rng, attack)
    cmd = commands(kind, base, rng)
    if attack == "exec" and cmd["argv"][0] == "inspect":
        zero = "ok"  # inspect shows what a file would import, without importing it
    if kind == "checkpoint" and desc.startswith("input_shape") and cmd["argv"][0] == "inspect":
        zero = "ok"  # the data's shape: inspect builds the model from kwargs and never reads it
    folder = "a"
    if attack == "encoding" and rng.random() < 0.5:
        folder = M.hostile_name(rng)
        desc = f"folder named {folder!r}; {desc}"
    argv = [_rename(a, folder) if a == "A" or a.startswith("A/") else a for a in cmd["argv"]]
    all_files = [(_rename(r, folder), s) for r, s in artifact_folder(kind, base) + files + cmd["files"]]
    outputs = [_rename(o, folder) for o in cmd["outputs"]]
    scratch = [_rename(s, folder) for s in cmd["scratch"]]
    return Case(id=f"s{seed}-{index}", kind=kind, attack=attack, mutation=desc, argv=argv, files=all_files,
                outputs=outputs, output_files=cmd["output_files"], run_output=cmd.get("run_output", False),
                scratch=scratch, zero=zero, timeout=cmd["timeout"],
                reproduce=f"scripts/fuzz_cli.py --seed {seed} --case {index} --kind {kind} --attack {attack} --keep")


def generate_many(seed: int, n: int, base: Base, kinds=KINDS, attacks=None, start: int = 0):
    for i in range(start, start + n):
        yield generate(seed, i, kinds, attacks, base=base)


# ---------------------------------------------------------------- the type sweep: every field, every wrong type

SWEEP_VALUES = [None, "x", -1, 2**63, 1.5, [], {}, True]
SWEEP_KINDS = ("checkpoint", "ir", "recipe", "board", "project", "lava", "loihi2", "manifest")


def _sweep_tree(kind: str, base: Base):
    return {"checkpoint": base.config, "ir": base.ir_graph, "recipe": base.recipe, "board": base.board,
            **{k: base.json.get(k) for k in ("project", "lava", "loihi2", "manifest")}}[kind]


def sweep_size(kind: str, base: Base) -> int:
    return len([p for p in M.paths(_sweep_tree(kind, base)) if p]) * len(SWEEP_VALUES)


def sweep_case(kind: str, index: int, base: Base) -> Case:
    """Field ``index // len(SWEEP_VALUES)`` of the kind's JSON/YAML document (in path order) set to
    wrong value ``index % len(SWEEP_VALUES)``; the command is drawn from the kind's commands by a
    generator seeded with the index."""
    tree = _sweep_tree(kind, base)
    fields = [p for p in M.paths(tree) if p]
    path, value = fields[index // len(SWEEP_VALUES)], SWEEP_VALUES[index % len(SWEEP_VALUES)]
    t = M.put(json.loads(json.dumps(tree)), path, value)
    where = "/".join(map(str, path))
    name = {"checkpoint": "A/config.json", "ir": "A/model.ir", "recipe": "A/recipe.yaml", "board": "A/board.yaml",
            "project": "A/project.json", "lava": "A/lava.json", "loihi2": "A/loihi2.json",
            "manifest": "A/manifest.json"}[kind]
    if kind == "ir":
        raw = _ir_bytes(base, graph=t)
    elif kind in ("recipe", "board"):
        raw = _recipe_text(_tame_epochs(t))
    else:
        raw = _json_bytes(t)
    rng = random.Random(f"sweep:{kind}:{index}")
    cmd = commands(kind, base, rng)
    files = artifact_folder(kind, base) + [(name, raw)] + cmd["files"]
    ren = lambda r: _rename(r, "a")  # noqa: E731
    return Case(id=f"w-{kind}-{index}", kind=kind, attack="type-sweep", mutation=f"{where}: -> {value!r}",
                argv=[ren(a) if a == "A" or a.startswith("A/") else a for a in cmd["argv"]],
                files=[(ren(r), s) for r, s in files], outputs=[ren(o) for o in cmd["outputs"]],
                output_files=cmd["output_files"], run_output=cmd.get("run_output", False),
                scratch=[ren(s) for s in cmd["scratch"]], zero="ok", timeout=cmd["timeout"],
                reproduce=f"scripts/fuzz_cli.py --sweep --kind {kind} --case {index} --keep")


def sweep_cases(base: Base, kinds=SWEEP_KINDS, start: int = 0, limit: int | None = None):
    """Every (field, wrong value) of each kind, kinds interleaved so any prefix covers them all."""
    sizes = {k: sweep_size(k, base) for k in kinds}
    produced = 0
    for i in range(start, max(sizes.values())):
        for k in kinds:
            if i < sizes[k]:
                if limit is not None and produced >= limit:
                    return
                produced += 1
                yield sweep_case(k, i, base)
