"""The one compatibility step lava-nc 0.10.0 needs on Python >= 3.11 (DESIGN.md: lava-nc).

What fails: ``lava/magma/compiler/var_model.py`` declares

    @dataclass
    class ByteEncoder:            # eq=True, frozen=False -> __hash__ = None
        base: int = 0; len: int = 0; ptr: int = 0

    @dataclass
    class CoreEncoder:
        x: ByteEncoder = ByteEncoder()   # instance used as a field default
        ...                              # (also ChipEncoder, AxonEncoder)

Python 3.11 (bpo-44674) changed the dataclass "mutable default" check from
``isinstance(default, (list, dict, set))`` to "the default's class is
unhashable" (``type(default).__hash__ is None``).  A plain ``@dataclass``
sets ``__hash__ = None``, so ``CoreEncoder`` raises ``ValueError: mutable
default ... ByteEncoder for field x`` at import time.  var_model is imported
by lava.magma.core.process.process, so every Process import fails.

Fix: while (and only while) lava's var_model module is first imported, the
``dataclasses.dataclass`` decorator is wrapped so that the class
``lava.magma.compiler.var_model.ByteEncoder`` is built with
``unsafe_hash=True``.  Its instances are then hashable, the 3.11 check
passes, and the behaviour is exactly that of Python 3.10 (one shared default
instance, as lava's authors wrote it; these encoders are only used by the
Loihi-hardware (Nc) compiler path, never by the CPU simulator).  Every other
class goes through the unchanged decorator; the wrapper is removed from
``dataclasses`` right after the import.  No file in site-packages is touched.
"""
from __future__ import annotations

import dataclasses
import importlib
import sys

_TARGET_MODULE = "lava.magma.compiler.var_model"
_TARGET_CLASS = "ByteEncoder"


def ensure_lava_importable() -> None:
    """Make ``import lava...`` work on Python 3.11+. Idempotent; call it before any lava import."""
    if _TARGET_MODULE in sys.modules:          # already imported (fixed or not needed)
        return
    if sys.version_info < (3, 11):             # old check: nothing to do
        return
    original = dataclasses.dataclass

    def patched(cls=None, /, **kwargs):
        def wrap(c):
            if c.__module__ == _TARGET_MODULE and c.__qualname__ == _TARGET_CLASS:
                kwargs.setdefault("unsafe_hash", True)
            return original(c, **kwargs)
        return wrap if cls is None else wrap(cls)

    dataclasses.dataclass = patched
    try:
        importlib.import_module(_TARGET_MODULE)
    finally:
        dataclasses.dataclass = original
