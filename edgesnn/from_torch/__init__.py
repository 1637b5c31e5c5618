"""Exports that start from the torch model rather than the IR: the one kind of artifact that does not
go through the hub. Today Brevitas's QCDQ ONNX file (``export --target onnx-qcdq``, :mod:`.qcdq`);
its target (:mod:`.target`) is registered with the others, its ``source`` is ``"torch"``."""
