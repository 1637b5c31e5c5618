#!/usr/bin/env bash
# An emulated Raspberry Pi for the tests: Debian's arm64 Python 3.11 and the aarch64 wheels of the device
# install (pip install 'edgesnn[device]': numpy, ai-edge-litert, ...), run under qemu-aarch64 by
# tests/test_device_aarch64.py. Run by scripts/setup.sh; idempotent and cached (a second run only checks).
#
#   $DIR/root/           Debian bookworm's arm64 python3.11 and the C libraries it and the wheels need,
#                        unpacked with dpkg-deb -x (no dpkg --add-architecture: a private apt state in $DIR/apt)
#   $DIR/site/           the aarch64 wheels, pip install --target --platform (built from this checkout)
#   $DIR/bin/python      runs root/usr/bin/python3.11 under qemu-aarch64 -L root, with site on its path; it is
#                        its own sys.executable, so the child interpreters edgesnn starts run emulated too
#
# DIR: $EDGESNN_AARCH64_DIR, default ~/.cache/edgesnn/aarch64-py311 (outside the checkout: a fresh clone reuses it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s%N)

DIR=${EDGESNN_AARCH64_DIR:-$HOME/.cache/edgesnn/aarch64-py311}
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
# python3.11 and what its interpreter, its stdlib's extension modules (ssl, ctypes, lzma, bz2, sqlite3,
# uuid) and the wheels' libraries (libstdc++, libgcc_s) link against; nothing interactive (readline, curses)
DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6 zlib1g libexpat1
      libssl3 libbz2-1.0 libcrypt1 libffi8 liblzma5 libuuid1 libsqlite3-0)
# pip --platform takes the tags literally (pip 23): every manylinux glibc from bookworm's 2.36 down to 2014's 2.17
PLATFORMS=()
for v in $(seq 36 -1 17); do PLATFORMS+=(--platform "manylinux_2_${v}_aarch64"); done
PLATFORMS+=(--platform manylinux2014_aarch64)

if ! command -v qemu-aarch64 >/dev/null; then
  echo "setup_aarch64: qemu-aarch64 missing (Debian's qemu-user; scripts/setup.sh installs it)" >&2
  exit 1
fi
[ -x .venv/bin/python ] || { echo "setup_aarch64: no .venv (run scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$DIR"

# 1. Debian's arm64 packages, into root/ -------------------------------------------------------------
root_key=$(printf '%s\n' "${DEBS[@]}" | sha256sum | cut -c1-16)
if [ "$(cat "$DIR/root.key" 2>/dev/null)" != "$root_key" ] || [ ! -x "$DIR/root/usr/bin/python3.11" ]; then
  echo "setup_aarch64: fetching Debian's arm64 python3.11 (${#DEBS[@]} packages)"
  APT=(-q -o "Dir::State::Lists=$DIR/apt/lists" -o "Dir::State::status=$DIR/apt/status" -o "Dir::Cache=$DIR/apt/cache"
       -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o APT::Sandbox::User=root)
  mkdir -p "$DIR/apt/lists/partial" "$DIR/apt/cache/archives/partial"
  : > "$DIR/apt/status"  # nothing installed: apt resolves nothing against this machine's own dpkg
  apt-get "${APT[@]}" update >/dev/null
  rm -rf "$DIR/debs" "$DIR/root.new" && mkdir -p "$DIR/debs" "$DIR/root.new"
  (cd "$DIR/debs" && apt-get "${APT[@]}" download "${DEBS[@]}" >/dev/null)
  for deb in "$DIR"/debs/*.deb; do dpkg-deb -x "$deb" "$DIR/root.new"; done
  rm -rf "$DIR/root" "$DIR/apt/lists" "$DIR/debs" && mv "$DIR/root.new" "$DIR/root"  # lists and .debs: not needed again
  echo "$root_key" > "$DIR/root.key"
fi

# 2. The wrapper: qemu-aarch64 with the sysroot; -0 makes it Python's argv[0], hence sys.executable
mkdir -p "$DIR/bin"
cat > "$DIR/bin/python.new" <<'EOF'
#!/bin/sh
# Debian's arm64 python3.11 under qemu-aarch64 (written by scripts/setup_aarch64.sh)
here=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$here/site" PYTHONNOUSERSITE=1 \
  exec qemu-aarch64 -L "$here/root" -0 "$0" "$here/root/usr/bin/python3.11" "$@"
EOF
chmod +x "$DIR/bin/python.new" && mv "$DIR/bin/python.new" "$DIR/bin/python"

# 3. The device install's aarch64 wheels, into site/ ------------------------------------------------------
# Reinstalled when edgesnn's own or [device] requirements change, or constraints.txt pins an installed
# package at another version (other changes to pyproject.toml or constraints.txt keep the cache).
site_key=$(.venv/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(sorted(p["dependencies"]), sorted(p["optional-dependencies"]["device"]))' | cat - <(printf '%s\n' "${PLATFORMS[@]}") \
  | sha256sum | cut -c1-16)
stale=$(.venv/bin/python - "$DIR/site" <<'EOF'
import pathlib, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
pin = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)", re.M)
pins = {norm(m[1]): m[2] for m in pin.finditer(open("constraints.txt").read())}
for info in pathlib.Path(sys.argv[1]).glob("*.dist-info"):
    name, _, version = info.name[:-len(".dist-info")].rpartition("-")
    if pins.get(norm(name), version) != version:
        print(f"{name} {version} (constraints.txt: {pins[norm(name)]})")
EOF
)
if [ "$(cat "$DIR/site.key" 2>/dev/null)" != "$site_key" ] || [ -n "$stale" ] || [ ! -d "$DIR/site/numpy" ]; then
  [ -z "$stale" ] || echo "setup_aarch64: pinned at other versions now: $stale"
  echo "setup_aarch64: installing the aarch64 wheels of edgesnn[device]"
  rm -rf "$DIR/site.new"
  "${PIP[@]}" install --no-warn-conflicts --target "$DIR/site.new" "${PLATFORMS[@]}" --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 -c constraints.txt ".[device]" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  rm -rf "$DIR/site" && mv "$DIR/site.new" "$DIR/site"
  # the emulated interpreter imports the runtime and the device path once (a few seconds under qemu)
  if ! "$DIR/bin/python" -I -c "import sys; sys.path.append('$DIR/site')
import numpy, ai_edge_litert.interpreter, edgesnn.device"; then
    echo "setup_aarch64: the emulated python cannot import the device install" >&2
    exit 1
  fi
  echo "$site_key" > "$DIR/site.key"
fi

ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf 'setup_aarch64: ok (%s) in %d.%01d s\n' "$DIR" $((ms / 1000)) $((ms % 1000 / 100))
