"""The named attacks of issue 17, each an exact case: the file the issue describes and the
commands it broke. All must end in one error line (exit 1), except the valid safetensors file
whose header length is 128 mod 256, which must be accepted (exit 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hostile import formats as F
from hostile import mutate as M
from hostile.cases import PWN_CODE, PWN_MODULE, Base, Case, _ir_bytes, _json_bytes, _json_out, _dir_out, \
    huge_padding_ir

DEEP = 100_000
NAMES = (  # every case all_cases() returns, in order (test_hostile.py parametrizes over these)
    "alias-bomb-recipe", "deep-json-ir-inspect", "deep-json-ir-verify", "deep-json-config-inspect",
    "deep-json-config-export", "deep-json-config-verify", "deep-json-nir-metadata-import",
    "deep-json-nir-metadata-verify", "deep-nir-graph-import", "deep-nir-graph-verify", "pad-huge-output-verify",
    "pad-huge-output-profile", "num-classes-2-40-inspect", "num-classes-2-40-export", "wide-layer-2-21-inspect",
    "npz-2-48-elements-verify", "npz-zip-bomb-verify", "npz-absurd-labels-train", "nir-huge-weight-import",
    "nir-huge-weight-verify", "nir-wide-weight-import", "nir-2-28-edges-import", "nan-weights-export-ir",
    "nan-weights-export-tflite", "type-confusion-model-5-inspect", "type-confusion-model-5-export",
    "type-confusion-model-list-inspect", "type-confusion-model-list-export", "type-confusion-model-dict-inspect",
    "type-confusion-model-dict-export", "type-confusion-model-null-inspect", "type-confusion-model-null-export",
    "type-confusion-kwargs-list-inspect", "non-utf8-recipe", "newline-file-name-inspect",
    "newline-file-name-verify", "newline-file-name-export", "loihi2-cores-minus-5-profile",
    "safetensors-header-128-inspect", "safetensors-header-128-export", "code-execution-config-inspect",
    "code-execution-user-module-inspect",
)


def _case(name: str, argv: list[str], files: list, *, outputs=(), output_files=(), zero="never", run_output=False,
          timeout=60.0, desc: str = "", kind: str = "", attack: str = "") -> Case:
    return Case(id=f"t-{name}", kind=kind, attack=attack, mutation=desc or name, argv=argv, files=files,
                outputs=list(outputs), output_files=list(output_files), run_output=run_output, zero=zero,
                timeout=timeout, reproduce=f"pytest tests/test_hostile.py -k {name.replace('-', '_')}")


def _with_json(name: str, argv: list[str], files: list, **kw) -> Case:
    c = {"argv": list(argv), "files": list(files), "outputs": [], "output_files": []}
    _json_out(c)
    return _case(name, c["argv"], c["files"], outputs=c["outputs"], **kw)


def _with_out(name: str, argv: list[str], files: list, previous: Path, must_hold: list[str], **kw) -> Case:
    c = {"argv": list(argv), "files": list(files), "outputs": [], "output_files": []}
    _dir_out(c, previous, must_hold)
    return _case(name, c["argv"], c["files"], outputs=c["outputs"], output_files=c["output_files"], **kw)


def _config(base: Base, **changes) -> bytes:
    cfg = json.loads(json.dumps(base.config))
    for k, v in changes.items():
        if k.startswith("kwargs."):
            cfg["kwargs"][k[7:]] = v
        else:
            cfg[k] = v
    return _json_bytes(cfg)


def _deep_config(base: Base) -> bytes:
    text = json.dumps({**base.config, "kwargs": "\x00DEEP\x00"})
    return text.replace('"\\u0000DEEP\\u0000"', M.deep_json_text(DEEP)).encode()


def _nir_metadata(base: Base, text: str) -> bytes:
    return F.h5_edit(base.nir, lambda f: F.h5_replace(f, "node/metadata/edgesnn", text))


def _nir_dataset(base: Base, name: str, shape, dtype="f4") -> bytes:
    return F.h5_edit(base.nir, lambda f: F.h5_replace(f, name, shape=shape, dtype=dtype))


def _nir_edges(base: Base, n: int) -> bytes:
    def edit(f):
        import h5py

        del f["node/edges"]
        f.create_dataset("node/edges", shape=(n, 2), dtype=h5py.string_dtype(), chunks=(4096, 2))

    return F.h5_edit(base.nir, edit)


def _weights_128(base: Base) -> bytes:
    from safetensors.numpy import load

    header, _ = F.split_safetensors(base.weights)
    return F.safetensors_with_header_length(load(base.weights), header.get("__metadata__") or {}, 128)


def _nan_weights(base: Base) -> bytes:
    from safetensors.numpy import load, save

    header, _ = F.split_safetensors(base.weights)
    arrays = load(base.weights)
    name = sorted(k for k, v in arrays.items() if k.endswith("weight") and v.dtype.kind == "f")[0]
    arrays[name] = arrays[name].copy()
    arrays[name].flat[0] = np.nan
    return save(arrays, metadata=header.get("__metadata__"))


def _loihi2_cores(base: Base, cores: int) -> bytes:
    return _json_bytes({**base.json["loihi2"], "cores": cores})


def all_cases(base: Base, cache: Path) -> list[Case]:
    """Every named attack (the 100,000-node NIR chain is written once into ``cache``)."""
    p = base.p
    cache.mkdir(parents=True, exist_ok=True)
    chain = cache / "chain-100000.nir"
    if not chain.is_file():
        F.nir_chain(DEEP, cache / "chain.tmp")
        (cache / "chain.tmp").rename(chain)
    ck = [("ck", p["checkpoint"])]
    nir_beside = [("n/model.ir", p["ir"])]
    deep_ir = _ir_bytes(base, graph=M.deep_json_text(DEEP))
    deep_nir_meta = _nir_metadata(base, M.deep_json_text(DEEP))
    huge_pad = huge_padding_ir(base, 8192)  # within the per-dimension bound: the memory plan must refuse it
    out: list[Case] = []

    # YAML alias bomb in model.kwargs.hidden (nine levels of nine-fold aliases)
    out.append(_case("alias-bomb-recipe", ["run", "bomb.yaml", "--out", "run"],
                     [("bomb.yaml", F.yaml_alias_bomb(9, 9).encode()), ("run", p["run"])],
                     outputs=["run"], run_output=True, kind="recipe", attack="bomb"))
    # JSON nested 100,000 deep: IR, checkpoint config, NIR metadata
    for cmd in ("inspect", "verify"):
        out.append(_with_json(f"deep-json-ir-{cmd}", [cmd, "a/model.ir"], [("a/model.ir", deep_ir)], kind="ir", attack="depth"))
    out.append(_with_json("deep-json-config-inspect", ["inspect", "ck"], ck + [("ck/config.json", _deep_config(base))],
                          kind="checkpoint", attack="depth"))
    out.append(_with_out("deep-json-config-export", ["export", "ck", "--target", "ir"],
                         ck + [("ck/config.json", _deep_config(base))], p["ir"].parent, ["model.ir"],
                         kind="checkpoint", attack="depth"))
    out.append(_with_json("deep-json-config-verify", ["verify", "a/model.ir", "--checkpoint", "ck"],
                          ck + [("ck/config.json", _deep_config(base)), ("a/model.ir", p["ir"])],
                          kind="checkpoint", attack="depth"))
    out.append(_with_out("deep-json-nir-metadata-import", ["import", "n/model.nir"],
                         [("n/model.nir", deep_nir_meta)] + nir_beside, p["imported"], ["config.json"],
                         kind="nir", attack="depth"))
    out.append(_with_json("deep-json-nir-metadata-verify", ["verify", "n/model.nir"],
                          [("n/model.nir", deep_nir_meta)] + nir_beside, kind="nir", attack="depth"))
    # a NIR graph 100,000 nodes deep
    out.append(_with_out("deep-nir-graph-import", ["import", "n/model.nir", "--timesteps", "4"],
                         [("n/model.nir", chain)] + nir_beside, p["imported"], ["config.json"], kind="nir",
                         attack="depth", timeout=120.0))
    out.append(_with_json("deep-nir-graph-verify", ["verify", "n/model.nir"], [("n/model.nir", chain)] + nir_beside,
                          kind="nir", attack="depth", timeout=120.0))
    # an IR whose pad op declares a huge output
    out.append(_with_json("pad-huge-output-verify", ["verify", "a/model.ir"], [("a/model.ir", huge_pad)],
                          kind="ir", attack="size"))
    out.append(_with_json("pad-huge-output-profile", ["profile", "a/model.ir", "--board", "host"],
                          [("a/model.ir", huge_pad)], kind="ir", attack="size"))
    # num_classes 2^40, a very wide layer
    for cmd in ("inspect", "export"):
        argv = ["inspect", "ck"] if cmd == "inspect" else ["export", "ck", "--target", "ir"]
        files = ck + [("ck/config.json", _config(base, **{"kwargs.num_classes": 2**40}))]
        out.append(_with_json(f"num-classes-2-40-{cmd}", argv, files, kind="checkpoint", attack="size")
                   if cmd == "inspect" else
                   _with_out(f"num-classes-2-40-{cmd}", argv, files, p["ir"].parent, ["model.ir"],
                             kind="checkpoint", attack="size"))
    out.append(_with_json("wide-layer-2-21-inspect", ["inspect", "ck"],
                          ck + [("ck/config.json", _config(base, **{"kwargs.hidden": 2**21}))],
                          kind="checkpoint", attack="size"))
    # .npz: 2^48 elements declared, a zip bomb, absurd labels
    npz_2_48 = F.npz_bytes({"x.npy": F.npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (2**48,)}),
                            "y.npy": F.npy_bytes({"descr": "<i8", "fortran_order": False, "shape": (4,)}, bytes(32))})
    ir_files = [("a/model.ir", p["ir"])]
    out.append(_with_json("npz-2-48-elements-verify", ["verify", "a/model.ir", "--data", "d.npz"],
                          ir_files + [("d.npz", npz_2_48)], kind="npz", attack="bomb"))
    out.append(_with_json("npz-zip-bomb-verify", ["verify", "a/model.ir", "--data", "d.npz"],
                          ir_files + [("d.npz", F.npz_zip_bomb())], kind="npz", attack="bomb"))
    labels = base.y.copy()
    labels[0] = 2**48
    out.append(_with_out("npz-absurd-labels-train", ["train", "--model", "mlp", "--data", "d.npz", "--epochs", "1"],
                         [("d.npz", F.npz_arrays(x=base.x, y=labels))], p["checkpoint"], ["config.json"],
                         kind="npz", attack="size", timeout=120.0))
    # NIR: a 65536x65536x3x3 weight, a 16384x32768 weight, 2^28 edges
    conv_w = next(n for n, t in base.nir_paths if t == "dataset" and n.endswith("features.6/weight"))
    dense_w = next(n for n, t in base.nir_paths if t == "dataset" and n.endswith("head.2/weight"))
    huge_w = _nir_dataset(base, conv_w, (65536, 65536, 3, 3))
    for cmd, argv in (("import", ["import", "n/model.nir"]), ("verify", ["verify", "n/model.nir"])):
        make = (lambda n, a, f, **kw: _with_out(n, a, f, p["imported"], ["config.json"], **kw)) if cmd == "import" \
            else _with_json
        out.append(make(f"nir-huge-weight-{cmd}", argv, [("n/model.nir", huge_w)] + nir_beside, kind="nir", attack="size"))
    out.append(_with_out("nir-wide-weight-import", ["import", "n/model.nir"],
                         [("n/model.nir", _nir_dataset(base, dense_w, (16384, 32768)))] + nir_beside,
                         p["imported"], ["config.json"], kind="nir", attack="size"))
    out.append(_with_out("nir-2-28-edges-import", ["import", "n/model.nir"],
                         [("n/model.nir", _nir_edges(base, 2**28))] + nir_beside, p["imported"], ["config.json"],
                         kind="nir", attack="size"))
    # NaN weights: export to ir and tflite
    nan = ck + [("ck/model.safetensors", _nan_weights(base))]
    out.append(_with_out("nan-weights-export-ir", ["export", "ck", "--target", "ir"], nan, p["ir"].parent,
                         ["model.ir"], kind="checkpoint", attack="values"))
    out.append(_with_out("nan-weights-export-tflite", ["export", "ck", "--target", "tflite"], nan,
                         p["tflite"].parent, ["model.tflite"], kind="checkpoint", attack="values"))
    # type confusion in config.json
    for label, value in (("5", 5), ("list", ["cnn", "mlp"]), ("dict", {"name": "cnn"}), ("null", None)):
        files = ck + [("ck/config.json", _config(base, model=value))]
        out.append(_with_json(f"type-confusion-model-{label}-inspect", ["inspect", "ck"], files,
                              kind="checkpoint", attack="type"))
        out.append(_with_out(f"type-confusion-model-{label}-export", ["export", "ck", "--target", "ir"], files,
                             p["ir"].parent, ["model.ir"], kind="checkpoint", attack="type"))
    out.append(_with_json("type-confusion-kwargs-list-inspect", ["inspect", "ck"],
                          ck + [("ck/config.json", _config(base, kwargs=[1, 2]))], kind="checkpoint", attack="type"))
    # a non-UTF-8 recipe
    bad = base.recipe_text.encode().replace(b"hostile-base", b"hostile-\xe9\xff")
    out.append(_case("non-utf8-recipe", ["run", "r.yaml", "--out", "run"], [("r.yaml", bad), ("run", p["run"])],
                     outputs=["run"], run_output=True, kind="recipe", attack="encoding"))
    # a file name with a newline must not forge a second error line
    forged = "bad\nerror: forged second line"
    out.append(_with_json("newline-file-name-inspect", ["inspect", f"{forged}/model.ir"],
                          [(f"{forged}/model.ir", b"\x00" * 16)], kind="ir", attack="encoding"))
    out.append(_with_json("newline-file-name-verify", ["verify", f"{forged}/model.tflite"],
                          [(f"{forged}/model.tflite", base.tflite[:100]), (f"{forged}/model.ir", p["ir"])],
                          kind="tflite", attack="encoding"))
    out.append(_with_out("newline-file-name-export", ["export", forged, "--target", "ir"],
                         [(forged, p["checkpoint"]), (f"{forged}/config.json", b"{")], p["ir"].parent, ["model.ir"],
                         kind="checkpoint", attack="encoding"))
    # cores -5 in loihi2.json is not a fit
    out.append(_with_json("loihi2-cores-minus-5-profile", ["profile", "lava", "--board", "loihi2"],
                          [("lava", p["lava"]), ("lava/loihi2.json", _loihi2_cores(base, -5))],
                          kind="loihi2", attack="values"))
    # a valid safetensors file whose header length is 128 mod 256 (first byte 0x80) is accepted
    w128 = ck + [("ck/model.safetensors", _weights_128(base))]
    out.append(_with_json("safetensors-header-128-inspect", ["inspect", "ck"], w128, zero="required",
                          kind="checkpoint", attack="valid"))
    out.append(_with_out("safetensors-header-128-export", ["export", "ck", "--target", "ir"], w128, p["ir"].parent,
                         ["model.ir"], zero="required", kind="checkpoint", attack="valid"))
    # code named by a file does not run without an opt-in (inspect may succeed: it shows what it would
    # import; the harness finds any file the code would have written)
    out.append(_with_json("code-execution-config-inspect", ["inspect", "ck"],
                          ck + [("ck/config.json", _config(base, model="torch:os.system",
                                                           kwargs={"command": "touch PWNED"}))],
                          kind="checkpoint", attack="exec", zero="ok"))  # inspect shows what it would import
    out.append(_with_json("code-execution-user-module-inspect", ["inspect", "ck"],
                          ck + [("ck/config.json", _config(base, model="PWNMOD:build", kwargs={})),
                                (PWN_MODULE, PWN_CODE)], kind="checkpoint", attack="exec", zero="ok"))
    return out
