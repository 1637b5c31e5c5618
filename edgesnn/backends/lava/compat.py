"""The compatibility steps Lava needs here, all in this one place (docs/lava.md: lava-nc 0.10 on
Python 3.11, and running the netx file in lava-dl): lava-nc 0.10.0 on Python >= 3.11
(:func:`ensure_lava_importable`), and for lava-dl 0.6.0's netx also lava-nc's reshape port on
numpy >= 2.4 and lava-dl's object-detection import (:func:`import_netx`). No file in
site-packages is touched.

1. lava-nc 0.10.0 on Python >= 3.11. What fails: ``lava/magma/compiler/var_model.py`` declares

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
``dataclasses`` right after the import.

2. lava-nc 0.10.0's ``ReshapePort`` (``lava/magma/core/process/ports/ports.py``;
what netx's flatten before a dense connects through) reshapes the data it
forwards with ``np.reshape(x, newshape=...)``, a keyword numpy 2.4 removed: the
receiving process raises ``TypeError`` in its own OS process on the first step
and the run fails ("1 Exception(s) occurred"). When numpy's ``reshape`` lacks ``newshape``, the port's two
transform methods are replaced by ones that pass the same shape positionally.

3. lava-dl 0.6.0: ``lava.lib.dl.netx.hdf5`` imports ``lava.lib.dl.slayer``,
whose ``__init__`` imports ``slayer.object_detection`` (bounding-box
utilities), which imports cv2 and torchvision: neither is installed (the
torchvision wheel lava-dl pins requires a torch < 2.4 and would pull a CUDA
build). netx never uses object detection, so an empty module is registered
under that name in ``sys.modules`` before the import; any use of it fails
with AttributeError, visibly.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import sys
import types

import numpy as np

from edgesnn.errors import EdgesnnError

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


_OBJECT_DETECTION = "lava.lib.dl.slayer.object_detection"


def import_netx():
    """``lava.lib.dl.netx`` with every step it needs (1, 2 and 3 above); idempotent.
    Raises EdgesnnError when lava-dl is not installed (scripts/setup.sh installs it)."""
    ensure_lava_importable()
    _reshape_without_newshape()
    if _OBJECT_DETECTION not in sys.modules:
        stub = types.ModuleType(_OBJECT_DETECTION, "empty stand-in: netx never uses slayer's object detection "
                                                   "(edgesnn.backends.lava.compat, step 3)")
        sys.modules[_OBJECT_DETECTION] = stub
    try:
        return importlib.import_module("lava.lib.dl.netx")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("lava.lib"):
            raise EdgesnnError("running a netx file needs lava-dl 0.6.0 (scripts/setup.sh installs it with "
                               "--no-deps)") from None
        raise


def _reshape(data, shape):
    return np.reshape(data, shape)


def _reshape_without_newshape() -> None:
    """Step 2: ReshapePort's transforms without numpy's removed ``newshape`` keyword (module-level
    functions in a partial, as Lava's own: the models may be pickled into their processes)."""
    if "newshape" in inspect.signature(np.reshape).parameters:
        return
    from lava.magma.core.process.ports.ports import ReshapePort

    ReshapePort.get_transform_func_fwd = lambda self: functools.partial(_reshape, shape=self.shape)
    ReshapePort.get_transform_func_bwd = lambda self: functools.partial(_reshape, shape=self.old_shape)
