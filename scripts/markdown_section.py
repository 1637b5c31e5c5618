"""Replace a marked section of a Markdown file (the tables the benchmark scripts regenerate)."""

from __future__ import annotations

import re
from pathlib import Path

from edgesnn.files import write_bytes


def replace_section(path: Path, name: str, body: str, header: str = "") -> None:
    """Put ``body`` between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``path``.

    The markers are appended (after ``header``) when the file does not have them yet.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    section = f"{begin}\n{body}\n{end}"
    text = path.read_text() if path.exists() else ""
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: section, text, flags=re.S)
    else:
        text = text + header + section + "\n"
    write_bytes(path, text.encode())  # atomic: a killed script leaves the old file
