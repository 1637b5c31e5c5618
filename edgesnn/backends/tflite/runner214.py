"""Run a .tflite file in tflite-runtime, inside its own environment (tflite-runtime 2.14 needs numpy < 2).

Not imported by edgesnn: :mod:`.runtime214` executes this file with that environment's python
(``python -I runner214.py REQUEST RESULT``), so it imports only the standard library, numpy and
tflite_runtime. REQUEST is an .npz with the model's bytes (already validated by the caller), the
op resolver (``BUILTIN_REF`` or ``AUTO``) and one integer batch per model input (``input_0``, ...);
RESULT gets one batch per model output (``output_0``, ...) and the runtime's name, or ``error`` and
``stage`` (load or run): the first line of what the runtime raised.
"""

import sys

import numpy as np


def main(request: str, result: str) -> None:
    req = np.load(request, allow_pickle=False)
    from tflite_runtime import __version__, interpreter

    name = f"tflite-runtime {__version__} (numpy {np.__version__})"
    resolver = str(req["resolver"])
    try:
        interp = interpreter.Interpreter(model_content=req["model"].tobytes(), num_threads=1,
                                         experimental_op_resolver_type=getattr(interpreter.OpResolverType, resolver))
        interp.allocate_tensors()
    except Exception as e:  # the runtime's own refusal: reported, not raised
        return np.savez(result, error=_first_line(e), stage="load", runtime=name)
    ins, outs = interp.get_input_details(), interp.get_output_details()
    batches = [req[f"input_{i}"] for i in range(len(ins))]
    got = [[] for _ in outs]
    try:
        for n in range(len(batches[0])):
            for d, batch in zip(ins, batches):
                interp.set_tensor(d["index"], batch[n][None].astype(d["dtype"]))
            interp.invoke()
            for r, o in zip(got, outs):
                r.append(interp.get_tensor(o["index"])[0])
    except Exception as e:
        return np.savez(result, error=_first_line(e), stage="run", runtime=name)
    np.savez(result, runtime=name, **{f"output_{i}": np.stack(r) for i, r in enumerate(got)})


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


if __name__ == "__main__":
    main(*sys.argv[1:3])
