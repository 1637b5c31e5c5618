"""The documentation's links and generated tables stay where the files and scripts say they are.

The README is the entry point; the guides and design notes are docs/*.md. A moved section breaks a
relative link, an anchor, a script that regenerates a table into a file that no longer has its
markers, or a code comment naming a Markdown file; each is checked here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
MARKDOWN = [ROOT / "README.md", ROOT / "SECURITY.md", ROOT / "BENCHMARKS.md", *DOCS]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(path: Path) -> str:
    """The file without its fenced code blocks (whose `#` lines are not headings, nor links)."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)


def anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for title in re.findall(r"^#{1,6} +(.+?) *$", prose(path), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path)) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("md", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(md):
    broken = []
    for target in links(md):
        file, _, anchor = target.partition("#")
        dest = (md.parent / file).resolve() if file else md
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert broken == []


def test_the_readme_indexes_every_guide():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md")}
    assert [d.name for d in DOCS if d.resolve() not in linked] == []


def script_outputs() -> list[tuple[str, str, Path]]:
    """(script, section, default --out) for every script that regenerates a marked Markdown section."""
    found = []
    for script in sorted((ROOT / "scripts").glob("*.py")):
        tree = ast.parse(script.read_text())
        consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                  for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
        out = sections = None
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, (ast.Name, ast.Attribute)):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if name == "add_argument" and node.args and getattr(node.args[0], "value", None) == "--out":
                default = next(k.value for k in node.keywords if k.arg == "default")
                parts = []
                while isinstance(default, ast.BinOp) and isinstance(default.op, ast.Div):
                    parts.insert(0, default.right.value)
                    default = default.left
                out = ROOT.joinpath(*parts)  # left: ROOT or Path(__file__).resolve().parent.parent
            if name == "replace_section":
                arg = node.args[1]
                sections = arg.value if isinstance(arg, ast.Constant) else consts[arg.id]
        if sections is not None and script.name != "markdown_section.py":
            found.append((script.name, sections, out))
    return found


def test_every_generated_table_is_in_the_file_its_script_writes():
    outputs = script_outputs()
    assert {s for s, _, _ in outputs} >= {"compression_results.py", "bring_agreement.py", "bench.py"}
    for script, section, out in outputs:
        begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
        holders = [p.relative_to(ROOT) for p in MARKDOWN if begin in p.read_text()]
        assert holders == [out.relative_to(ROOT)], (script, section)
        assert out.read_text().count(begin) == 1 and out.read_text().count(end) == 1, (script, section)


def test_markdown_files_named_in_code_exist():
    """A comment or message that points to a Markdown file points to one the project has."""
    missing = []
    for path in [*ROOT.joinpath("edgesnn").rglob("*.py"), *ROOT.joinpath("edgesnn").rglob("*.c"),
                 *ROOT.joinpath("scripts").glob("*.py"), *ROOT.joinpath("tests").glob("*.py")]:
        for name in re.findall(r"(?<![\w/.-])(docs/[\w-]+\.md|[A-Z][A-Z_]+\.md)\b", path.read_text()):
            if not (ROOT / name).exists() and not (ROOT / "docs" / name).exists():
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert missing == []
