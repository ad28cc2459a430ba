"""Security (issue 8, item 4): nothing in the library unpickles, and paths from parameters are validated."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

from scene_perception.engines.cache import prepare_cache_dir
from scene_perception.models.weights import ModelLoadError, check_weights_path

PACKAGE = Path(__file__).resolve().parents[1] / "scene_perception"

#: Modules whose loaders execute code from the data they read.
PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
#: ``<owner>.<function>`` calls that unpickle (``torch.load`` / TorchScript archives, pandas pickles).
PICKLING_CALLS = {
    "torch.load",
    "torch.jit.load",
    "pd.read_pickle",
    "pandas.read_pickle",
    "np.load",
    "numpy.load",
}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def pickle_uses(source: str, filename: str = "<src>") -> list[str]:
    """Code (not comments or docstrings) that imports a pickling module or calls an unpickling loader.

    ``np.load`` is only safe with ``allow_pickle=False`` (the default), but the library has no reason to read
    ``.npy`` files at all, so any call is reported; ``allow_pickle=True`` anywhere is reported too.
    """
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [
                f"{where} import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLING_MODULES
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLING_MODULES:
            found.append(f"{where} from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in PICKLING_CALLS:
                found.append(f"{where} {name}(...)")
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    found.append(f"{where} allow_pickle={ast.unparse(kw.value)}")
    return found


def test_scanner_finds_what_it_looks_for() -> None:
    """The scan below is only meaningful if it would catch each pattern."""
    bad = (
        "import pickle\nfrom dill import loads\nimport torch\n"
        "torch.load('w.pt')\nnp.load('x.npy', allow_pickle=True)\nnumpy.load('y', allow_pickle=flag)\n"
    )
    hits = pickle_uses(bad)
    assert {h.split()[0] for h in hits} == {f"<src>:{line}" for line in (1, 2, 4, 5, 6)}, hits
    assert sum("allow_pickle" in h for h in hits) == 2
    ok = '"""torch.load unpickles; we never call it."""\n# import pickle\nsafe_open("w.safetensors", "pt")\n'
    assert pickle_uses(ok) == []


def test_library_never_unpickles() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    found = [
        hit for f in files for hit in pickle_uses(f.read_text(encoding="utf-8"), str(f.relative_to(PACKAGE)))
    ]
    assert found == [], "pickle-based loading in library code:\n" + "\n".join(found)


# ------------------------------------------------------------------------------------------ weights path
def test_weights_path_checks(tmp_path: Path) -> None:
    good = tmp_path / "w.safetensors"
    good.write_bytes(b"x" * 16)
    assert check_weights_path(good) == good
    link = tmp_path / "link.safetensors"
    link.symlink_to(good)  # a symlink to a regular file is fine (e.g. "current" weights)
    assert check_weights_path(link) == link
    for name in ("w.pt", "w.pth", "w.ckpt", "w.pkl", "w.bin", "w"):
        (tmp_path / name).write_bytes(b"x")
        with pytest.raises(ModelLoadError, match="pickle"):
            check_weights_path(tmp_path / name)
    with pytest.raises(ModelLoadError, match="NUL"):
        check_weights_path(str(good) + "\0.safetensors")
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_weights_path(tmp_path / "none.safetensors")
    dangling = tmp_path / "dangling.safetensors"
    dangling.symlink_to(tmp_path / "gone.safetensors")
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_weights_path(dangling)
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(ModelLoadError, match="is a directory, not a regular file"):
        check_weights_path(tmp_path / "d.safetensors")
    os.mkfifo(tmp_path / "p.safetensors")
    with pytest.raises(ModelLoadError, match="FIFO"):
        check_weights_path(tmp_path / "p.safetensors")
    (tmp_path / "e.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        check_weights_path(tmp_path / "e.safetensors")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file: the permission check cannot fail")
def test_unreadable_weights(tmp_path: Path) -> None:
    path = tmp_path / "secret.safetensors"
    path.write_bytes(b"x")
    path.chmod(0)
    with pytest.raises(ModelLoadError, match="not readable"):
        check_weights_path(path)


# ---------------------------------------------------------------------------------------- cache directory
def test_cache_dir_checks(tmp_path: Path) -> None:
    created = prepare_cache_dir(tmp_path / "new" / "cache")
    assert created.is_dir() and stat.S_IMODE(created.stat().st_mode) & 0o077 == 0, "created private"
    team = tmp_path / "team"
    team.mkdir()
    team.chmod(0o775)  # group-writable: a deliberate shared cache, allowed
    assert prepare_cache_dir(team) == team
    for mode in (0o777, 0o1777, 0o703):
        team.chmod(mode)
        with pytest.raises(ValueError, match="world-writable"):
            prepare_cache_dir(team)
    team.chmod(0o755)
    with pytest.raises(ValueError, match="NUL"):
        prepare_cache_dir(str(team) + "\0x")
    os.environ["SP_TEST_CACHE"] = str(tmp_path)
    try:
        assert prepare_cache_dir("$SP_TEST_CACHE/env") == tmp_path / "env"
    finally:
        del os.environ["SP_TEST_CACHE"]
