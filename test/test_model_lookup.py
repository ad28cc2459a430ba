"""Issue 21, item 3: where shipped and deployed models are found, in a decided order.

parameter (an explicit weights path) > ``$SCENE_PERCEPTION_MODELS`` > ``share/scene_perception/models`` of
the installed package > the source tree's ``models/``.

With ``colcon build --symlink-install`` every installed file is a symlink into src/, and the old search
(``Path(__file__).resolve()``, i.e. through the symlink, first) found the source tree before share/. Here a
fake install prefix whose share/ holds symlinks into the repo's models/ stands in for that; the real
``--symlink-install`` build is checked in ``test/test_colcon_install.py``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from scene_perception.models import weights as weights_mod
from scene_perception.models.weights import (
    load_pose_model,
    load_stereo_model,
    model_search_dirs,
)

ROOT = Path(__file__).resolve().parents[1]
SOURCE_MODELS = ROOT / "models"


@pytest.fixture
def prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An install prefix registered in the ament index, its share/ models symlinked into the source tree
    (as ``--symlink-install`` installs them), and no SCENE_PERCEPTION_MODELS. The module is treated as
    imported from the checkout (no install prefix of its own), also when ``colcon test`` runs this file
    against an install space; :func:`test_where_this_module_was_imported_from` covers that case."""
    monkeypatch.setattr(weights_mod, "_prefix_share_models", lambda _module_file: None)
    monkeypatch.setattr(weights_mod, "_source_tree_models", lambda: SOURCE_MODELS)
    prefix = tmp_path / "install"
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / "scene_perception"
    marker.parent.mkdir(parents=True)
    marker.write_text("")
    share_models = prefix / "share" / "scene_perception" / "models"
    share_models.mkdir(parents=True)
    for src in SOURCE_MODELS.iterdir():
        (share_models / src.name).symlink_to(src)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    monkeypatch.delenv(weights_mod.ENV_MODELS, raising=False)
    return prefix


def _copy_lite(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        shutil.copy(SOURCE_MODELS / f"lite{suffix}", dest / f"lite{suffix}")
    return dest


@pytest.mark.parametrize(
    ("module_file", "share"),
    [
        ("/ws/install/scene_perception/lib/python3.11/site-packages/scene_perception/models/weights.py",
         "/ws/install/scene_perception/share/scene_perception/models"),
        ("/opt/ros/kilted/lib/python3.12/dist-packages/scene_perception/models/weights.py",
         "/opt/ros/kilted/share/scene_perception/models"),
        ("/usr/lib64/python3.11/site-packages/scene_perception/models/weights.py",
         "/usr/share/scene_perception/models"),
        (str(ROOT / "scene_perception" / "models" / "weights.py"), None),  # a checkout: no prefix
        ("/x/site-packages/scene_perception/models/weights.py", None),
        ("/p/lib/python3.11/site-packages/other_pkg/models/weights.py", None),
    ],
)
def test_install_prefix_from_the_module_path(module_file: str, share: str | None) -> None:
    got = weights_mod._prefix_share_models(module_file)
    assert got == (Path(share) if share else None)


def test_the_checkout_is_the_last_place(prefix: Path) -> None:
    share_models = prefix / "share" / "scene_perception" / "models"
    assert model_search_dirs() == [share_models, SOURCE_MODELS]


def test_order_parameter_env_share_source(prefix: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    share_models = prefix / "share" / "scene_perception" / "models"

    # share/ before the source tree, although share/'s files are symlinks into it: the path reported is
    # the installed one.
    _, info = load_stereo_model("lite")
    assert info.weights_path == share_models / "lite.safetensors" and info.trained
    assert info.weights_path.is_symlink()
    _, pose_info = load_pose_model("posenet")
    assert pose_info.weights_path == share_models / "posenet.safetensors"

    # SCENE_PERCEPTION_MODELS before share/.
    env_dir = _copy_lite(tmp_path / "deployed")
    monkeypatch.setenv(weights_mod.ENV_MODELS, str(env_dir))
    assert model_search_dirs() == [env_dir, share_models, SOURCE_MODELS]
    _, info = load_stereo_model("lite")
    assert info.weights_path == env_dir / "lite.safetensors"

    # The parameter (an explicit path) before everything.
    explicit = _copy_lite(tmp_path / "explicit") / "lite.safetensors"
    _, info = load_stereo_model("lite", weights=explicit)
    assert info.weights_path == explicit

    # Nothing in the environment directory nor share/: the source tree.
    monkeypatch.setenv(weights_mod.ENV_MODELS, str(tmp_path / "empty"))
    for f in share_models.glob("lite.*"):
        f.unlink()
    _, info = load_stereo_model("lite")
    assert info.weights_path == SOURCE_MODELS / "lite.safetensors"


def test_a_directory_reached_twice_is_listed_once(prefix: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    share_models = prefix / "share" / "scene_perception" / "models"
    monkeypatch.setenv(weights_mod.ENV_MODELS, str(SOURCE_MODELS))
    assert model_search_dirs() == [SOURCE_MODELS, share_models]
    # share/scene_perception/models itself a symlink to the source directory: one entry, share's place.
    shutil.rmtree(share_models)
    share_models.symlink_to(SOURCE_MODELS, target_is_directory=True)
    monkeypatch.delenv(weights_mod.ENV_MODELS)
    assert model_search_dirs() == [share_models]


def test_where_this_module_was_imported_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing sourced, no SCENE_PERCEPTION_MODELS. Imported from the checkout (the pip environment's
    editable install): the checkout's shipped models. Imported from an install space (``colcon test``):
    that prefix's share/ first, then (``--symlink-install`` only) the checkout the symlinks lead to."""
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    monkeypatch.delenv(weights_mod.ENV_MODELS, raising=False)
    own_share = weights_mod._prefix_share_models(weights_mod.__file__)
    checkout = weights_mod._source_tree_models()
    if own_share is None:
        assert Path(weights_mod.__file__).resolve().parents[2] == ROOT
        assert checkout == SOURCE_MODELS
        expected = SOURCE_MODELS
    else:
        assert (own_share / "lite.safetensors").is_file(), f"{own_share}: shipped models not installed"
        assert checkout in (None, SOURCE_MODELS)
        expected = own_share
    assert model_search_dirs() == [d for d in (own_share, checkout) if d is not None]
    _, info = load_stereo_model("lite")
    assert info.weights_path == expected / "lite.safetensors" and info.trained


def test_colcon_test_runs_against_the_install_space() -> None:
    """Under ``colcon test`` (CMakeLists.txt sets SCENE_PERCEPTION_TEST_INSTALL_PREFIX), the package and its
    generated messages are the installed ones, as in a sourced workspace, not the checkout."""
    prefix = os.environ.get("SCENE_PERCEPTION_TEST_INSTALL_PREFIX")
    if not prefix:
        pytest.skip("not run by colcon test")
    import scene_perception
    import scene_perception.msg

    for module in (scene_perception, scene_perception.msg, weights_mod):
        assert Path(module.__file__).is_relative_to(prefix), f"{module.__name__} from {module.__file__}"
    assert weights_mod._prefix_share_models(weights_mod.__file__) == (
        Path(prefix) / "share" / "scene_perception" / "models"
    )
