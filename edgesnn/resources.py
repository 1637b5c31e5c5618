"""The files edgesnn ships with its code: board and recipe YAML files (edgesnn/shipped/) and the
MCU project templates (edgesnn/backends/mcu/templates/).

They are package data, found through :mod:`importlib.resources`, so that an installed wheel finds
them exactly as a checkout does. This is the one place that knows where they live.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from edgesnn.errors import EdgesnnError

# name -> its folder inside the edgesnn package
FOLDERS = {
    "boards": ("shipped", "boards"),
    "recipes": ("shipped", "recipes"),
    "mcu-templates": ("backends", "mcu", "templates"),
}


def folder(name: str) -> Path:
    """The shipped folder ``name`` (one of FOLDERS) as a real folder on disk.

    Callers list it, read it with size limits and copy it as a tree, which needs a file-system path:
    an edgesnn imported from a zip archive has none, an install without its data has no folder,
    and either says so instead of finding nothing."""
    found = files("edgesnn").joinpath(*FOLDERS[name])
    if not isinstance(found, Path) or not found.is_dir():
        raise EdgesnnError(f"edgesnn's shipped folder {'/'.join(FOLDERS[name])} is not a folder on disk ({found}); "
                           "install edgesnn from its wheel or a checkout")
    return found
