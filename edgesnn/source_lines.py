"""Where in the user's code an fx node, or a tracing failure, comes from.

The exporter's messages name module paths and source lines (``blocks.0.attn (Attention),
mynet.py:42: q = self.q(x).view(...)``) rather than fx node names such as ``getattr_1``, which
mean nothing to the person who wrote the model. torch.fx records, per node, the module stack
(``nn_module_stack``) and, with ``record_stack_traces``, the whole Python stack; the user's line
is the innermost frame outside torch and edgesnn.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import torch
from torch import fx

import edgesnn

_OURS = tuple(str(Path(p.__file__).parent) for p in (torch, edgesnn))
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in \S+\n\s*(?P<code>[^\n]*)')


def user_line(frames: list[tuple[str, int, str]]) -> str | None:
    """``file:line: code`` of the innermost (file, line, code) frame that is not torch's or edgesnn's."""
    for file, line, code in reversed(frames):
        if not file.startswith(_OURS) and not file.startswith("<"):
            return f"{Path(file).name}:{line}: {code.strip()}" if code else f"{Path(file).name}:{line}"
    return None


def node_line(node: fx.Node) -> str | None:
    return user_line([(m["file"], int(m["line"]), m["code"]) for m in _FRAME.finditer(node.stack_trace or "")])


def exception_line(e: BaseException) -> str | None:
    return user_line([(f.filename, f.lineno or 0, f.line or "") for f in traceback.extract_tb(e.__traceback__)])


def module_path(node: fx.Node) -> str:
    """``path (Class)`` of the module whose forward made ``node`` (the model itself at the top level)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "the model's forward"
    path, cls = list(stack.values())[-1]
    name = cls if isinstance(cls, str) else getattr(cls, "__qualname__", str(cls))
    return f"{path} ({name.rsplit('.', 1)[-1]})"


def where(node: fx.Node) -> str:
    """A node's module path and source line, for a message."""
    line = node_line(node)
    return module_path(node) + (f", {line}" if line else "")
