"""edgesnn: deploy quantized spiking neural networks to edge targets."""

from importlib import metadata

try:
    __version__ = metadata.version("edgesnn")  # pyproject.toml is the one place the version is written
except metadata.PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"
