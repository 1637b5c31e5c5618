"""Format-agnostic mutations: bytes, JSON-like trees, text encodings, nesting and file names.

Every function takes a ``random.Random`` and returns the mutated value and a one-line description
of what it did, so a failing case says how its file was made. Nothing here knows edgesnn.
"""

from __future__ import annotations

import copy
import json
import random
import struct

# Values a field of the wrong type, sign or size may get. Strings include a forged second error
# line, an escape sequence, a path and a factory spec: anything echoed must stay one line.
HOSTILE_VALUES = [
    None, True, False, 0, 1, -1, -5, 3, 2**31, -(2**31) - 1, 2**40, 2**63, 2**64, -(2**63), 10**30,
    0.5, -0.0, 1e308, -1e308, float("nan"), float("inf"), float("-inf"),
    "", "x", "4", "int8", "a\nerror: forged second line", "\x1b[2J\x1b[31mred", "\u202etxt.exe", "\x00",
    "../../../../etc/passwd", "/dev/zero", "torch:os.system", "os:system", "é" * 3,
    [], {}, [0], [None], [[]], [1, 2, 3], [-1, -1], [2**40, 2**40], {"": None}, {"kind": "conv2d"},
]
SIZES = [0, -1, -5, 2**16 + 1, 2**21, 2**28, 2**31, 2**32, 2**40, 2**48, 2**62, 2**63, 2**64]
NEGATIVES = [-1, -5, -(2**31), -(2**63), -0.5, float("-inf")]


def hostile_value(rng: random.Random):
    return copy.deepcopy(rng.choice(HOSTILE_VALUES))


def nested(depth: int, kind: str = "list", leaf=0):
    """A JSON value ``depth`` levels deep, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def deep_json_text(depth: int, kind: str = "list") -> str:
    """Text of a JSON value ``depth`` deep (json.dumps itself would recurse)."""
    if kind == "list":
        return "[" * depth + "0" + "]" * depth
    return '{"a":' * depth + "0" + "}" * depth


def dumps(obj) -> str:
    """json.dumps that also writes the NaN/Infinity tokens Python accepts and JSON does not."""
    return json.dumps(obj, allow_nan=True, ensure_ascii=False)


# ---------------------------------------------------------------- trees (JSON / YAML documents)

def paths(tree) -> list[tuple]:
    """Every path (tuple of keys/indices) in a tree of dicts and lists, root included, iteratively."""
    out, stack = [], [((), tree)]
    while stack:
        path, node = stack.pop()
        out.append(path)
        if isinstance(node, dict):
            stack.extend((path + (k,), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((path + (i,), v) for i, v in enumerate(node))
    return sorted(out, key=repr)


def get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def put(tree, path, value):
    if not path:
        return value
    get(tree, path[:-1])[path[-1]] = value
    return tree


def tree_mutation(tree, rng: random.Random, numeric_only: bool = False):
    """One structural mutation of a JSON-like tree: retype, drop, add, resize, wrap, deepen, swap a
    list, or replace the whole document. Returns (new tree, description)."""
    tree = copy.deepcopy(tree)
    all_paths = paths(tree)
    if numeric_only:
        nums = [p for p in all_paths if isinstance(get(tree, p), (int, float)) and not isinstance(get(tree, p), bool)]
        all_paths = nums or all_paths
    path = rng.choice(all_paths)
    where = "/".join(map(str, path)) or "<root>"
    old = get(tree, path)
    op = rng.choice(["retype", "retype", "retype", "drop", "add", "size", "size", "negate", "wrap", "deepen",
                     "empty", "top", "dup"])
    if op == "size" or (numeric_only and op not in ("retype", "negate")):
        v = rng.choice(SIZES)
        return put(tree, path, v), f"{where}: {_short(old)} -> {v}"
    if op == "negate":
        v = rng.choice(NEGATIVES) if not isinstance(old, (int, float)) or old == 0 else -old
        return put(tree, path, v), f"{where}: {_short(old)} -> {v}"
    if op == "drop" and path:
        parent = get(tree, path[:-1])
        del parent[path[-1]]
        return tree, f"{where}: removed"
    if op == "add":
        node = get(tree, path)
        if isinstance(node, dict):
            key = rng.choice(["unknown", "__proto__", "", "a\nerror: forged", "kind", "model", "__metadata__"])
            node[key] = hostile_value(rng)
            return tree, f"{where}: added key {key!r}"
        if isinstance(node, list):
            node.insert(rng.randrange(len(node) + 1), hostile_value(rng))
            return tree, f"{where}: inserted an element"
    if op == "wrap":
        v = [old] if rng.random() < 0.5 else {"value": old}
        return put(tree, path, v), f"{where}: wrapped in {type(v).__name__}"
    if op == "deepen":
        depth = rng.choice([10, 65, 200, 800])  # json.dumps recurses: deeper ones are spliced as text (cases.py)
        return put(tree, path, nested(depth, rng.choice(["list", "dict"]))), f"{where}: nested {depth} deep"
    if op == "empty":
        v = type(old)() if isinstance(old, (dict, list, str)) else rng.choice([[], {}, ""])
        return put(tree, path, v), f"{where}: emptied to {v!r}"
    if op == "top":
        v = hostile_value(rng)
        return v, f"<root> replaced by {_short(v)}"
    if op == "dup" and isinstance(old, list) and old:
        v = old * rng.choice([2, 1000])
        return put(tree, path, v), f"{where}: list repeated to {len(v)} elements"
    v = hostile_value(rng)
    return put(tree, path, v), f"{where}: {_short(old)} -> {_short(v)}"


# ---------------------------------------------------------------- bytes

INT_POKES = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def byte_mutation(raw: bytes, rng: random.Random, hot: tuple[int, int] | None = None) -> tuple[bytes, str]:
    """One byte-level mutation. ``hot``: a (start, end) range (a header) that gets half the hits."""
    b = bytearray(raw)
    if not b:
        return bytes([rng.randrange(256)]), "empty file -> one random byte"

    def pos() -> int:
        if hot and rng.random() < 0.5 and hot[1] > hot[0]:
            return rng.randrange(hot[0], min(hot[1], len(b)))
        return rng.randrange(len(b))

    op = rng.choice(["flip", "flip", "flip", "byte", "poke", "poke", "insert", "delete", "zero", "dup", "append"])
    if op == "flip":
        n = rng.choice([1, 1, 2, 4, 16])
        at = [pos() for _ in range(n)]
        for i in at:
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b), f"bit flips at {sorted(at)[:6]}"
    if op == "byte":
        i = pos()
        b[i] = rng.randrange(256)
        return bytes(b), f"byte {i} set to {b[i]:#x}"
    if op == "poke":
        i = pos() & ~3
        v = rng.choice(INT_POKES)
        b[i:i + 4] = struct.pack("<I", v)[: len(b) - i]
        return bytes(b), f"u32 {v:#x} written at {i}"
    if op == "insert":
        i = pos()
        chunk = bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, 8, 64])))
        return bytes(b[:i] + chunk + b[i:]), f"{len(chunk)} random bytes inserted at {i}"
    if op == "delete":
        i = pos()
        n = rng.choice([1, 4, 64, 1024])
        return bytes(b[:i] + b[i + n:]), f"{n} bytes deleted at {i}"
    if op == "zero":
        i = pos()
        n = rng.choice([4, 64, 4096])
        b[i:i + n] = bytes(len(b[i:i + n]))
        return bytes(b), f"{n} bytes zeroed at {i}"
    if op == "dup":
        i = pos()
        chunk = b[i:i + rng.choice([8, 256])]
        return bytes(b[:i] + chunk + b[i:]), f"{len(chunk)} bytes duplicated at {i}"
    tail = bytes(rng.randrange(256) for _ in range(rng.choice([1, 100])))
    return bytes(b) + tail, f"{len(tail)} garbage bytes appended"


def truncation(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    n = len(raw)
    at = rng.choice([0, 1, 4, 7, 8, 9, 16, n // 2, n - 1, rng.randrange(max(n, 1))])
    at = max(0, min(at, n - 1))
    return raw[:at], f"truncated to {at} of {n} bytes"


# ---------------------------------------------------------------- text encodings

def encoding_mutation(text: str, rng: random.Random) -> tuple[bytes, str]:
    """The text made non-UTF-8, re-encoded or decorated; some variants remain valid (a BOM-less
    CRLF file), which the case's exit-0 rule allows."""
    raw = text.encode()
    op = rng.choice(["latin1", "invalid", "overlong", "surrogate", "bom", "utf16", "utf32", "nul", "crlf", "cr"])
    if op == "latin1":
        i = rng.randrange(len(raw) + 1)
        return raw[:i] + "é".encode("latin-1") + raw[i:], f"latin-1 byte 0xe9 inserted at {i}"
    if op == "invalid":
        i = rng.randrange(len(raw) + 1)
        bad = rng.choice([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xf8\x88\x80\x80\x80", b"\x80"])
        return raw[:i] + bad + raw[i:], f"invalid UTF-8 {bad!r} inserted at {i}"
    if op == "overlong":
        return raw.replace(b"/", b"\xc0\xaf", 1).replace(b":", b"\xc0\xba", 1), "overlong UTF-8 for '/' and ':'"
    if op == "surrogate":
        i = rng.randrange(len(raw) + 1)
        return raw[:i] + b"\xed\xa0\x80" + raw[i:], f"UTF-8-encoded surrogate inserted at {i}"
    if op == "bom":
        return b"\xef\xbb\xbf" + raw, "UTF-8 byte order mark prepended"
    if op == "utf16":
        return text.encode("utf-16"), "re-encoded as UTF-16 (with BOM)"
    if op == "utf32":
        return text.encode("utf-32-le"), "re-encoded as UTF-32-LE (no BOM)"
    if op == "nul":
        i = rng.randrange(len(raw) + 1)
        return raw[:i] + b"\x00" + raw[i:], f"NUL byte inserted at {i}"
    if op == "crlf":
        return raw.replace(b"\n", b"\r\n"), "CRLF line endings"
    return raw.replace(b"\n", b"\r"), "CR-only line endings"


# File names a user may be handed: each must be printed escaped, as one line.
HOSTILE_NAMES = [
    "bad\nerror: forged line",
    "bad\rerror: carriage",
    "tab\tname",
    "\x1b[31mred\x1b[0m",
    "spa ce",
    "-dash",
    "ünï",
    "bad\udcffbyte",  # a non-UTF-8 byte (0xff) in the name, as os.fsdecode spells it
    "\u2028sep",
]


def hostile_name(rng: random.Random) -> str:
    return rng.choice(HOSTILE_NAMES)


def _short(v, n: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= n else text[: n - 3] + "..."
