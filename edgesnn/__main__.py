"""The ``edgesnn`` executable (and ``python -m edgesnn``): signals first, then the CLI.

Ctrl-C and SIGTERM end any command with one line and status 128 + signal. A signal during the
heavy imports is acted on once they finish; during a command it raises SystemExit, so clean-up
runs, and if a library wraps that exception in its own error (TVM and torch do, from inside their
callbacks) the traceback is still replaced by the one line. Work that must survive a kill without
clean-up (``edgesnn run``) is built to.
"""

import signal
import sys

_received: list[int] = []
_running = False


def _stop(signum, frame):
    _received.append(signum)
    if _running and len(_received) == 1:
        raise SystemExit(128 + signum)


def _interrupted():
    print("error: interrupted", file=sys.stderr)
    sys.exit(128 + _received[0])


def main() -> None:
    global _running
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        from edgesnn.cli import app  # torch, typer, ...: seconds

        if _received:
            _interrupted()
        _running = True
        app()
    except BaseException:
        if _received:
            _interrupted()
        raise


if __name__ == "__main__":
    main()
