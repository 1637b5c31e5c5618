#!/usr/bin/env bash
# Set up edgesnn on a fresh Debian machine (Python 3.11, CPU only). Idempotent: run it again and
# it only checks. Creates .venv at the repository root.
#
# Order matters: torch 2.13.0 (CPU wheel) goes in first, so every later requirement on torch is
# already satisfied and pip never pulls the multi-GB CUDA build. Every install is pinned through
# constraints.txt so that a fresh install next month gives the same, known-good set.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv
CONSTRAINTS=constraints.txt
# Toolchains and emulators for the MCU (Cortex-M on QEMU) and aarch64 Linux targets
# (libc6-dev-arm64-cross: the C library for static aarch64 binaries run by qemu-aarch64).
# chromium: /usr/bin/chromium, the headless browser the profile report's test renders the page in.
# cmake: an MCU project's CMakeLists.txt, built by tests/test_mcu_library.py as a firmware would.
APT_PACKAGES=(gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
              chromium cmake)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: warning: not root, cannot install Debian packages: ${missing[*]}" >&2
    echo "setup: the MCU/QEMU targets and the profile report test need them (sudo apt-get install ${missing[*]})" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# The machine's pip config lists local index folders that may not exist; drop that noise.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

quiet "${PIP[@]}" install -c "$CONSTRAINTS" torch==2.13.0
quiet "${PIP[@]}" install -c "$CONSTRAINTS" -e ".[all]"
# edgesnn fit: Optuna (the search, its SQLite study) and Ray core (--ray); the [fit] extra.
quiet "${PIP[@]}" install -c "$CONSTRAINTS" -e ".[fit]"
"$VENV/bin/python" -c "import optuna, ray; assert int(optuna.__version__.split('.')[0]) >= 5"
# lava-nc 0.10.0 declares Python < 3.11 and numpy < 2 but runs here (the Lava backend carries
# the one compatibility step it needs on 3.11); its real dependencies come from the [lava] extra.
quiet "${PIP[@]}" install -c "$CONSTRAINTS" --no-deps --ignore-requires-python lava-nc==0.10.0
# lava-dl 0.6.0: its netx loads the model.net files of the lava target (tests/test_netx_lava_dl.py runs
# them). It declares Python < 3.11 and pins torch < 2.4, torchvision and opencv: installed without its
# dependencies next to this torch. netx needs lava-nc, h5py, numpy, scipy and torch, all installed
# above; the steps it needs are in edgesnn/backends/lava/compat.py (import_netx), checked here.
quiet "${PIP[@]}" install -c "$CONSTRAINTS" --no-deps --ignore-requires-python lava-dl==0.6.0
"$VENV/bin/python" -c "from edgesnn.backends.lava.compat import import_netx; import_netx().hdf5.Network"
# spikingjelly 2.0 (the tests' SpikingJelly models) requires torchvision, torchaudio and tensorboard,
# which would pull a CUDA torch build we must not pull: installed without its dependencies; what its
# neurons and layers import (loguru, tqdm) comes from the [test] extra.
quiet "${PIP[@]}" install -c "$CONSTRAINTS" --no-deps spikingjelly==2.0.0 loguru==0.7.3
# tonic 1.7.0 (edgesnn/data_events.py: N-MNIST, DVS Gesture, SHD read from local files and binned) requires
# librosa, numba and llvmlite for its audio transforms, which edgesnn never imports: installed without its
# dependencies; `import tonic` needs importRosbag and expelliarmus (numpy, scipy and h5py come from above).
quiet "${PIP[@]}" install -c "$CONSTRAINTS" --no-deps tonic==1.7.0 importRosbag==1.0.4 expelliarmus==1.1.12
"$VENV/bin/python" -c "import tonic.io, tonic.transforms, tonic.datasets"
# norse 1.1.0, sinabs 3.1.3 and rockpool 3.1.0 (tests/test_temporal_nir_import.py imports the NIR graphs their
# exporters write): norse requires torchvision, sinabs pins nir <= 1.0.4 and samna (its chip stack), rockpool's
# torch extra more; none of that is imported on these paths, so they are installed without dependencies next to
# this torch and nir (sinabs needs pbr at import).
quiet "${PIP[@]}" install -c "$CONSTRAINTS" --no-deps norse==1.1.0 sinabs==3.1.3 rockpool==3.1.0 pbr==7.1.3
"$VENV/bin/python" -c "import norse.torch, sinabs.layers, sinabs.nir, rockpool.nn.modules.torch.nir"
# tflite-runtime 2.14 (what older Raspberry Pi images run; verify and the tests run .tflite files in
# it) needs numpy < 2, which this environment cannot have: a small environment of its own inside
# this one, $VENV/tflite-runtime, run as a subprocess (edgesnn/backends/tflite/runtime214.py).
TFLITE_RUNTIME_VENV="$VENV/tflite-runtime"
[ -x "$TFLITE_RUNTIME_VENV/bin/python" ] || "$PYTHON" -m venv "$TFLITE_RUNTIME_VENV"
quiet "$TFLITE_RUNTIME_VENV/bin/python" -m pip --disable-pip-version-check -q install tflite-runtime==2.14.0 numpy==1.26.4
"$TFLITE_RUNTIME_VENV/bin/python" -I -c "import tflite_runtime; assert tflite_runtime.__version__ == '2.14.0'"
# An emulated Raspberry Pi (Debian's arm64 Python 3.11 and the aarch64 wheels of edgesnn[device], run under
# qemu-aarch64 by tests/test_device_aarch64.py); cached in ~/.cache/edgesnn, a second run only checks. Optional:
# when it cannot be set up, the rest still is, and those tests fail naming this script.
bash scripts/setup_aarch64.sh || echo "setup: warning: no emulated Raspberry Pi (scripts/setup_aarch64.sh failed);" \
  "tests/test_device_aarch64.py will fail until scripts/setup.sh sets it up" >&2

"$VENV/bin/python" -c "import torch, edgesnn; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "setup: ok ($VENV, torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
