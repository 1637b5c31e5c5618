#!/usr/bin/env bash
# Rewrite constraints.txt from the current .venv after a deliberate, tested upgrade.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
{
  echo "# Known-good set, installed by scripts/setup.sh (pip -c). Regenerate with scripts/freeze-constraints.sh"
  echo "# after a deliberate upgrade; torch is the CPU wheel (setup.sh installs it first)."
  .venv/bin/python -m pip freeze --exclude-editable 2>/dev/null | grep -v '^#' | sed 's/^torch==\(.*\)+cpu$/torch==\1/'
} > constraints.txt
