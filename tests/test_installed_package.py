"""edgesnn as a user installs it: the wheel, in a new virtual environment outside the repository,
run from a folder outside it. Boards, recipes and the MCU templates must come from the wheel: before
they were package data the installed `edgesnn boards` listed nothing and `edgesnn demo` failed.

The virtual environment reuses this one's dependencies through a .pth line (so nothing is
downloaded); a .pth line adds a folder to sys.path without running the .pth files in it, so the
editable install's finder, which maps `edgesnn` to the checkout, stays inactive there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from edgesnn import boards, resources
from edgesnn.errors import EdgesnnError

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
SHIPPED = {name: sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "edgesnn").joinpath(*parts).rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts)
           for name, parts in resources.FOLDERS.items()}
DEMO_EXPORTS = ["ir", "tflite", "mcu-nucleo-f446re", "lava", "onnx", "nir"]


def _run(args, cwd, env=None, timeout=600):
    r = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, wheel, env, user folder): the wheel built from a copy of the sources, installed alone."""
    work = tmp_path_factory.mktemp("installed")
    assert not work.resolve().is_relative_to(ROOT)
    src = work / "src"  # a copy: building in the checkout would leave build/ and egg-info there
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (src / name).write_bytes((ROOT / name).read_bytes())
    _copy_tree(ROOT / "edgesnn", src / "edgesnn")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", work / "dist", src], cwd=work)
    [wheel] = (work / "dist").glob("edgesnn-*.whl")
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=work)
    _run([*pip, "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index", wheel], cwd=work)
    site = Path(_run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=work).stdout.strip())
    ours = sysconfig.get_paths()
    (site / "edgesnn-test-dependencies.pth").write_text("".join(f"{p}\n" for p in {ours["purelib"], ours["platlib"]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    env |= {"PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "COLUMNS": "200"}
    user = work / "user"
    user.mkdir()
    return venv, wheel, env, user, site


def _copy_tree(src: Path, dst: Path) -> None:
    for path in src.rglob("*"):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())


def test_the_wheel_ships_boards_recipes_templates_and_the_license(installed):
    _, wheel, _, _, _ = installed
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(f"edgesnn-{VERSION}.dist-info/METADATA").decode()
        license_text = z.read(f"edgesnn-{VERSION}.dist-info/licenses/LICENSE")
    for files in SHIPPED.values():
        assert set(files) <= names
    assert len(SHIPPED["boards"]) == 16 and len(SHIPPED["recipes"]) == 5 and "edgesnn/shipped/boards/loihi2.yaml" in names
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert license_text == (ROOT / "LICENSE").read_bytes() and b"Apache License\n" in license_text


def test_the_installed_package_is_imported_from_the_venv_only(installed):
    venv, _, env, user, site = installed
    probe = ("import json, sys, edgesnn\nfrom edgesnn import resources\n"
             "print(json.dumps({'file': edgesnn.__file__, 'version': edgesnn.__version__, 'path': sys.path, "
             "'folders': {n: str(resources.folder(n)) for n in resources.FOLDERS}}))")
    r = json.loads(_run([venv / "bin" / "python", "-c", probe], cwd=user, env=env).stdout)
    assert Path(r["file"]).is_relative_to(site) and r["version"] == VERSION
    assert all(Path(f).is_relative_to(site) for f in r["folders"].values())
    # no folder on its path holds an importable edgesnn but the venv's: the checkout is out of sight
    assert [p for p in r["path"] if p and (Path(p) / "edgesnn").exists()] == [str(site)]


def test_version_boards_demo_and_mcu_export_from_outside_the_repository(installed):
    venv, wheel, env, user, _ = installed
    edgesnn = venv / "bin" / "edgesnn"
    assert _run([edgesnn, "--version"], cwd=user, env=env).stdout == f"edgesnn {VERSION}\n"

    r = _run([edgesnn, "boards", "--json", "boards.json"], cwd=user, env=env)
    listed = {b["name"]: b for b in json.loads((user / "boards.json").read_text())["boards"]}
    shipped = sorted(Path(f).stem for f in SHIPPED["boards"])
    assert sorted(listed) == shipped and all(name in r.stdout for name in shipped)
    assert listed["nucleo-f446re"] == boards.as_dict(boards.load("nucleo-f446re"))  # the same file's fields

    _run([edgesnn, "demo", "--out", "demo"], cwd=user, env=env)  # ~30 s: trains the default recipe's CNN
    manifest = json.loads((user / "demo" / "manifest.json").read_text())
    assert manifest["recipe"]["name"] == "digits-sfa-cnn"
    assert [row["export"] for row in manifest["summary"] if "board" not in row] == DEMO_EXPORTS
    assert [(row["board"], row["fits"]) for row in manifest["summary"] if "board" in row] == \
        [("raspberry-pi-4", True), ("nucleo-f446re", True), ("loihi2", True)]
    assert all((user / "demo" / a["path"]).is_file() for a in manifest["artifacts"])
    loihi = json.loads((user / "demo" / "lava" / "loihi2.json").read_text())  # figures of the shipped loihi2 board
    assert loihi["cores"] >= 1

    _run([edgesnn, "export", "demo/checkpoint", "--target", "mcu", "--board", "nucleo-f446re", "--out", "mcu"],
         cwd=user, env=env)
    project = json.loads((user / "mcu" / "project.json").read_text())
    assert (project["board"], project["cpu"], project["qemu_machine"]) == ("nucleo-f446re", "cortex-m4", "mps2-an386")
    with zipfile.ZipFile(wheel) as z:  # the templates, copied from the installed ones byte for byte
        for template in SHIPPED["mcu-templates"]:
            copied = user / "mcu" / Path(template).relative_to("edgesnn/backends/mcu/templates")
            assert copied.read_bytes() == z.read(template)


def test_a_shipped_folder_that_is_not_on_disk_is_one_clear_error(tmp_path, monkeypatch):
    archive = tmp_path / "edgesnn.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("edgesnn/shipped/boards/host.yaml", "name: host\n")
    monkeypatch.setattr(resources, "files", lambda package: zipfile.Path(archive, "edgesnn/"))
    with pytest.raises(EdgesnnError, match=r"^edgesnn's shipped folder shipped/boards is not a folder on disk"):
        resources.folder("boards")


def test_a_shipped_folder_missing_from_the_install_is_named(tmp_path, monkeypatch):
    (tmp_path / "shipped").mkdir()
    monkeypatch.setattr(resources, "files", lambda package: tmp_path)
    with pytest.raises(EdgesnnError, match=r"shipped folder shipped/recipes is not a folder on disk"):
        resources.folder("recipes")
