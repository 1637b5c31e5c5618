"""A restricted unpickler for the one data format edgesnn reads that IS a pickle: CIFAR-10/100's
python version (dicts of lists, ints, byte strings and one uint8 numpy array).

Nothing a file names is ever called. The file is read whole (size-checked), then every opcode is
checked before unpickling starts (:func:`_scan`): only the opcodes plain data needs are allowed, and
memo indices, container counts (so nesting depth: a tuple nested 10^6 deep crashes CPython when it
is hashed as a dict key) and opcode counts are bounded. The only globals accepted are the three
names a pickled uint8 array uses — numpy's ``_reconstruct``, ``ndarray`` and ``dtype`` — and they
resolve to stand-ins defined here, which check their arguments and build the array themselves with
``np.frombuffer`` from the bytes in the file: no numpy code runs on what the file says, and an
object or other dtype, a declared shape that does not match the bytes, or any other global (e.g.
``os.system``) is one error line. Byte strings come back as bytes (``encoding="bytes"``, as the
official CIFAR loader reads Python 2's ``str``).
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
from pathlib import Path

import numpy as np

from edgesnn import limits
from edgesnn.errors import EdgesnnError

MAX_OPS = 2_000_000  # CIFAR-100's train file (50,000 images, two label lists, file names) has ~250,000
MAX_CONTAINERS = 256  # tuples, lists and dicts built; a real CIFAR file builds fewer than 20
# What plain data needs: scalars, strings, tuples, lists, dicts, the memo, and the globals and
# REDUCE/BUILD of a pickled numpy array. Not allowed: persistent ids, INST/OBJ/NEWOBJ (instantiate a
# class), extension codes, sets and out-of-band buffers.
ALLOWED_OPCODES = frozenset("""
    PROTO FRAME STOP MARK POP POP_MARK DUP NONE NEWTRUE NEWFALSE
    INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT
    STRING BINSTRING SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8
    UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8
    EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST LIST APPEND APPENDS EMPTY_DICT DICT SETITEM SETITEMS
    GET BINGET LONG_BINGET PUT BINPUT LONG_BINPUT MEMOIZE GLOBAL STACK_GLOBAL REDUCE BUILD
""".split())
_CONTAINERS = frozenset("TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST LIST EMPTY_DICT DICT".split())
_PUTS = frozenset(("PUT", "BINPUT", "LONG_BINPUT"))
_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
_UINT8 = ("u1", b"u1", "|u1", b"|u1", "uint8", b"uint8")


def load(path: str | Path, max_bytes: int):
    """The object pickled in ``path``, arrays at the top level of a dict as numpy uint8 arrays."""
    path = Path(path)
    raw = limits.read_bytes(path, "pickle file", max_bytes)
    _scan(raw, path)
    try:
        obj = _Unpickler(io.BytesIO(raw), path).load()
    except EdgesnnError:
        raise
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, EOFError, KeyError, IndexError,
            OverflowError, RecursionError) as e:  # only stand-ins and builtin containers run: a malformed file
        raise EdgesnnError(f"{path}: not a readable pickle of data ({limits._short(e)})") from None
    if isinstance(obj, dict):
        return {k: (_array(path, v) if isinstance(v, _Array) else v) for k, v in obj.items()}
    return _array(path, obj) if isinstance(obj, _Array) else obj


def _scan(raw: bytes, path: Path) -> None:
    """Every opcode checked before anything is unpickled (declared lengths lie inside the file:
    ``pickletools`` reads them from an in-memory copy)."""
    ops = containers = 0
    try:
        for op, arg, pos in pickletools.genops(io.BytesIO(raw)):
            ops += 1
            if ops > MAX_OPS:
                raise EdgesnnError(f"{path}: more than {MAX_OPS:,} pickle opcodes; not a data file edgesnn reads")
            if op.name not in ALLOWED_OPCODES:
                raise EdgesnnError(f"{path}: pickle opcode {op.name} at byte {pos} is refused (a data file holds "
                                   f"plain values and uint8 arrays only)")
            if op.name in _CONTAINERS:
                containers += 1
                if containers > MAX_CONTAINERS:
                    raise EdgesnnError(f"{path}: more than {MAX_CONTAINERS} tuples, lists and dicts; not a data "
                                       f"file edgesnn reads")
            elif op.name in _PUTS and arg > ops:  # picklers number the memo 0, 1, 2, ...: a huge index sizes the memo
                raise EdgesnnError(f"{path}: pickle memo index {arg:,} at byte {pos} is out of range")
            elif op.name == "GLOBAL":
                _allowed(path, *arg.split(" ", 1))
    except EdgesnnError:
        raise
    except (ValueError, EOFError, OverflowError) as e:  # genops: an unknown opcode, a truncated argument
        raise EdgesnnError(f"{path}: not a pickle file ({limits._short(e)})") from None
    if ops == 0:
        raise EdgesnnError(f"{path}: empty file")


def _allowed(path: Path, module: str, name: str):
    if (module, name) in _RECONSTRUCT:
        return _Call(_reconstruct)
    if (module, name) == ("numpy", "ndarray"):
        return _NDARRAY
    if (module, name) == ("numpy", "dtype"):
        return _Call(_dtype)
    raise EdgesnnError(f"{path}: the pickle references {limits._short(module, 60)}.{limits._short(name, 60)}, "
                       f"which is refused (only numpy's uint8 arrays are accepted): nothing was run")


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module, name):  # GLOBAL, STACK_GLOBAL (EXT* are refused by _scan)
        return _allowed(self.path, module, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are refused")


class _Frozen:
    """A stand-in BUILD cannot change: no __dict__, and a __setstate__ that refuses."""
    __slots__ = ()

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"{type(self).__name__[1:]} takes no state")


class _NDArrayName(_Frozen):
    """What ``numpy.ndarray`` resolves to: only a marker for _reconstruct (NEWOBJ is refused by _scan)."""
    __slots__ = ()


_NDARRAY = _NDArrayName()


class _Call(_Frozen):
    __slots__ = ("fn",)

    def __init__(self, fn):
        object.__setattr__(self, "fn", fn)

    def __call__(self, *args):
        return self.fn(*args)


class _DType:
    """``numpy.dtype('u1', align, copy)`` as numpy pickles it; its state is checked and dropped."""
    __slots__ = ("ok",)

    def __init__(self):
        self.ok = False

    def __setstate__(self, state):
        # (3, '|', None, None, None, -1, -1, 0): version, byte order, subarray, names, fields, ...
        if self.ok or not (isinstance(state, tuple) and len(state) >= 5 and state[0] in (3, 4)
                           and state[1] in ("|", b"|", "<", b"<", "=", b"=") and state[2:5] == (None, None, None)):
            raise pickle.UnpicklingError(f"dtype state {limits._short(state)} is not uint8's")
        self.ok = True


class _Array:
    """An array as numpy pickles it: _reconstruct(ndarray, (0,), b'b'), then BUILD with
    (version, shape, dtype, fortran_order, raw bytes); built here from the bytes."""
    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if self.array is not None or not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("not a numpy array's state")
        if len(state) == 5:
            if state[0] != 1:
                raise pickle.UnpicklingError(f"numpy array state version {limits._short(state[0])}")
            state = state[1:]
        shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DType) or not dtype.ok:
            raise pickle.UnpicklingError("an array whose dtype is not uint8")
        if not isinstance(shape, tuple) or len(shape) > limits.MAX_TENSOR_RANK or \
                not all(type(d) is int and d >= 0 for d in shape):
            raise pickle.UnpicklingError(f"array shape {limits._short(shape)}")
        if not isinstance(raw, bytes) or len(raw) != math.prod(shape) or fortran not in (True, False, 0, 1):
            raise pickle.UnpicklingError(f"array of shape {shape} with {len(raw) if isinstance(raw, bytes) else '?'} "
                                         f"bytes of data")
        flat = np.frombuffer(raw, dtype=np.uint8)
        self.array = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def _reconstruct(subtype, shape, dtype):
    if subtype is not _NDARRAY or shape != (0,) or dtype not in (b"b", "b"):
        raise pickle.UnpicklingError("_reconstruct is accepted only as numpy pickles an array")
    return _Array()


def _dtype(spec, align=False, copy=True):
    if spec not in _UINT8 or align not in (False, 0):
        raise pickle.UnpicklingError(f"dtype {limits._short(spec)} is refused (only uint8 arrays are accepted)")
    return _DType()


def _array(path: Path, v: _Array) -> np.ndarray:
    if v.array is None:
        raise EdgesnnError(f"{path}: an array without its data")
    return v.array
