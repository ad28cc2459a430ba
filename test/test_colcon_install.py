"""Issue 21: the ROS path, as a new user takes it, cannot silently rot.

``colcon build --packages-select scene_perception`` in a temporary workspace (``src/scene_perception`` a
symlink to this checkout) from the pip environment (the PyPI ROS wheels, colcon-common-extensions from
requirements.txt, the wheels' CMake include-dir fix that ``tools/setup_env.sh`` applies), then, with the
environment ``install/setup.bash`` gives:

- the install space: share/ has package.xml, launch, config, rviz and every shipped model; lib/ has the
  four executables; the Python package sits with its generated messages and their typesupport;
- the messages import from the install space and (de)serialize through its typesupport libraries;
- the shipped models resolve from share/ (and from share/ too with ``--symlink-install``, whose files are
  symlinks into src/: item 3);
- an installed executable starts a node that reaches 'active' and stops cleanly on SIGINT (item 5);
- everything the launch file names exists there (item 4, via test_launch_file.check_launch_targets);
- ``colcon test`` runs the registered pytest suite (a small subset here: the whole suite takes ~10 min) and
  ``colcon test-result`` counts its tests (item 2).

And without colcon: every third-party module the package imports has its rosdep key in package.xml or, with
no key in the ROS rosdistro, a pip line in docs/install.md (item 1).

Skipped, with the reason, only where colcon is not installed. About 1.5-2 minutes on 2 cores.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "scene_perception"
EXECUTABLES = ("stereo_depth_node", "sgbm_depth_node", "scene_node", "pose_node")
#: ctest names (= test module names) `colcon test` runs here: quick, and they import the package, its
#: messages and rclpy from the install space.
COLCON_TEST_SUBSET = ("test_model_lookup", "test_launch_file", "test_runner_shutdown")
BUILD_TIMEOUT = 600


# --- rosdep keys (no colcon needed) --------------------------------------------------------------------

#: Every non-stdlib top-level module the package (scene_perception/, launch/, scripts/) imports -> its rosdep
#: key (ros/rosdistro, looked up for Kilted / Ubuntu 24.04) and whether package.xml makes it optional;
#: None: no rosdep key exists, docs/install.md must give the pip line. A new import fails
#: test_every_import_has_a_rosdep_key until it is added here (and to package.xml or the docs).
IMPORT_KEYS: dict[str, tuple[str | None, bool]] = {
    "numpy": ("python3-numpy", False),
    "cv2": ("python3-opencv", False),
    "yaml": ("python3-yaml", False),
    "torch": ("python3-torch", False),
    "onnxruntime": ("python3-onnxruntime-pip", True),
    "rosbags": ("python3-rosbags-pip", True),
    "tqdm": ("python3-tqdm", True),
    "matplotlib": ("python3-matplotlib", True),
    "safetensors": (None, False),
    "onnx": (None, True),
    "tensorrt": (None, True),
    "vision_msgs": (None, True),  # messages.py prefers vision_msgs/LabelInfo where it is installed
    # ROS packages: the key is the package name
    **{
        name: (name, False)
        for name in (
            "rclpy", "rcl_interfaces", "builtin_interfaces", "std_msgs", "sensor_msgs", "stereo_msgs",
            "geometry_msgs", "diagnostic_msgs", "lifecycle_msgs", "ament_index_python", "tf2_ros",
            "message_filters", "launch", "launch_ros",
        )
    },
}
#: pip names of the modules without a rosdep key (what docs/install.md must mention).
PIP_NAMES = {"safetensors": "safetensors", "onnx": "onnx", "tensorrt": "tensorrt",
             "vision_msgs": "ros-kilted-vision-msgs"}


def _imported_top_level_modules() -> dict[str, str]:
    files = [*ROOT.joinpath(PACKAGE).rglob("*.py"), ROOT / "launch" / "perception.launch.py"]
    files += [f for f in ROOT.joinpath("scripts").iterdir() if f.is_file()]
    found: dict[str, str] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != PACKAGE:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _manifest_dependencies() -> dict[str, str | None]:
    """exec/generic dependencies of package.xml -> their condition (None: unconditional)."""
    root = ET.parse(ROOT / "package.xml").getroot()
    return {
        e.text.strip(): e.get("condition")
        for e in root
        if e.tag in ("depend", "exec_depend", "run_depend") and e.text
    }


def test_every_import_has_a_rosdep_key() -> None:
    imported = _imported_top_level_modules()
    unknown = {m: f for m, f in imported.items() if m not in IMPORT_KEYS}
    assert not unknown, f"imports with no rosdep decision (add to IMPORT_KEYS and package.xml): {unknown}"
    deps = _manifest_dependencies()
    docs = (ROOT / "docs" / "install.md").read_text()
    for module in imported:
        key, optional = IMPORT_KEYS[module]
        if key is None:
            assert "pip install" in docs and PIP_NAMES[module] in docs, f"{module}: not in docs/install.md"
            continue
        assert key in deps, f"{module} (imported by {imported[module]}): package.xml lacks <exec_depend>{key}"
        if optional:
            assert deps[key] == "$SCENE_PERCEPTION_OPTIONAL_DEPS == 1", (key, deps[key])
            assert key in docs, f"optional {key} not documented"
        else:
            assert deps[key] is None, f"{key} is required but conditional in package.xml"
    assert "cv_bridge" not in deps, "cv_bridge is not used (ros/codec.py converts images)"


# --- colcon workspace ----------------------------------------------------------------------------------


def _colcon() -> str | None:
    here = Path(sys.executable).parent / "colcon"
    return str(here) if here.is_file() else shutil.which("colcon")


def _base_env() -> dict[str, str]:
    """The environment a user of the pip environment builds in: the venv is the only ROS prefix (its
    python3 first on PATH, for the executables' ``#!/usr/bin/env python3``), nothing else sourced."""
    env = dict(os.environ)
    for var in ("PYTHONPATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH"):
        env.pop(var, None)
    prefix = sys.prefix
    if not Path(prefix, "share", "ament_cmake").is_dir():
        # A ROS install (not the pip environment): keep its sourced underlays, without scene_perception.
        for var in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH"):
            parts = [p for p in os.environ.get(var, "").split(os.pathsep)
                     if p and not Path(p, "share", PACKAGE, "package.xml").is_file()]
            env[var] = os.pathsep.join(parts)
    else:
        env["AMENT_PREFIX_PATH"] = env["CMAKE_PREFIX_PATH"] = prefix
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("SCENE_PERCEPTION_MODELS", None)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float, what: str
         ) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        logs = ""
        for log in sorted(cwd.glob(f"log/latest*/{PACKAGE}/stdout_stderr.log")):
            logs += f"\n--- {log}:\n" + log.read_text()[-4000:]
        pytest.fail(f"{what} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-4000:]}\n"
                    f"{proc.stderr[-4000:]}{logs}")
    return proc


def _build(workspace: Path, *extra: str, testing: bool = True) -> dict[str, str]:
    """colcon build into ``workspace``; returns the environment ``install/setup.bash`` sets up."""
    colcon = _colcon()
    if colcon is None:
        pytest.skip("colcon is not installed: pip install colcon-common-extensions (requirements.txt has it; "
                    "re-run tools/setup_env.sh)")
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / PACKAGE).symlink_to(ROOT, target_is_directory=True)
    env = _base_env()
    cmake_args = [f"-DPython3_EXECUTABLE={sys.executable}", f"-DBUILD_TESTING={'ON' if testing else 'OFF'}"]
    _run([colcon, "build", "--packages-select", PACKAGE, *extra, "--cmake-args", *cmake_args],
         workspace, env, BUILD_TIMEOUT, "colcon build")
    dump_env = 'import json, os; print(json.dumps(dict(os.environ)))'
    dump = subprocess.run(
        ["bash", "-c", f'source install/setup.bash && exec "$0" -c "{dump_env}"', sys.executable],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    return json.loads(dump.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    workspace = tmp_path_factory.mktemp("colcon_ws")
    return workspace, _build(workspace)


def _python(code: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> dict:
    """Run ``code`` in a fresh interpreter with ``env`` (from a directory without a scene_perception
    package, so nothing shadows the install space); its last stdout line is JSON."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_install_space_layout(built: tuple[Path, dict[str, str]]) -> None:
    workspace, _ = built
    prefix = workspace / "install" / PACKAGE
    share = prefix / "share" / PACKAGE
    for rel in ("package.xml", "launch/perception.launch.py", "config/perception.yaml",
                "rviz/perception.rviz", "msg/LabelInfo.msg", "msg/VisionClass.msg"):
        assert (share / rel).is_file(), f"share/{PACKAGE}/{rel} missing"
    shipped = sorted(p.name for p in (ROOT / "models").iterdir() if p.is_file())
    assert shipped and sorted(p.name for p in (share / "models").iterdir()) == shipped
    for exe in EXECUTABLES:
        path = prefix / "lib" / PACKAGE / exe
        assert path.is_file() and os.access(path, os.X_OK), f"lib/{PACKAGE}/{exe} missing or not executable"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    site = next(prefix.glob(f"lib/python3*/site-packages/{PACKAGE}"))
    for rel in ("__init__.py", "msg/_label_info.py", "ros/runner.py", "ros/launch_plan.py",
                "models/weights.py"):
        assert (site / rel).is_file(), f"{rel} not installed"
    assert list(site.glob(f"{PACKAGE}_s__rosidl_typesupport_c*.so")), "typesupport extension missing"
    assert (site / "__init__.py").read_text() == (ROOT / PACKAGE / "__init__.py").read_text(), (
        "the generated empty __init__.py replaced ours")


@pytest.mark.slow
def test_messages_import_from_the_install_space(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    workspace, env = built
    got = _python(
        "import json\n"
        "import scene_perception, scene_perception.msg as m\n"
        "from rclpy.serialization import serialize_message, deserialize_message\n"
        "field = next(k for k, t in m.VisionClass.get_fields_and_field_types().items() if t == 'string')\n"
        "info = m.LabelInfo(); info.class_map.append(m.VisionClass(**{field: 'road'}))\n"
        "back = deserialize_message(serialize_message(info), m.LabelInfo)\n"
        "print(json.dumps({'pkg': scene_perception.__file__, 'msg': m.__file__,\n"
        "                  'name': getattr(back.class_map[0], field)}))\n",
        env, tmp_path,
    )
    install = str(workspace / "install" / PACKAGE)
    assert got["pkg"].startswith(install) and got["msg"].startswith(install), got
    assert got["name"] == "road"


def _check_models_from_share(workspace: Path, env: dict[str, str], cwd: Path) -> dict:
    got = _python(
        "import json\n"
        "from scene_perception.models.weights import load_stereo_model, model_search_dirs\n"
        "_, info = load_stereo_model('lite')\n"
        "print(json.dumps({'dirs': [str(d) for d in model_search_dirs()], 'path': str(info.weights_path),\n"
        "                  'trained': info.trained}))\n",
        env, cwd,
    )
    share_models = str(workspace / "install" / PACKAGE / "share" / PACKAGE / "models")
    assert got["dirs"][0] == share_models, got["dirs"]
    assert got["path"] == f"{share_models}/lite.safetensors" and got["trained"], got
    return got


@pytest.mark.slow
def test_shipped_models_load_from_share(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    workspace, env = built
    got = _check_models_from_share(workspace, env, tmp_path)
    assert str(ROOT / "models") not in got["dirs"], "a plain install must not search the checkout"


@pytest.mark.ros
@pytest.mark.slow
def test_installed_executable_starts_a_node(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """``lib/scene_perception/sgbm_depth_node`` (what ``ros2 run`` starts) reaches 'active' and exits 0,
    without a stray traceback or "never retrieved" exception, on SIGINT."""
    workspace, env = built
    exe = workspace / "install" / PACKAGE / "lib" / PACKAGE / "sgbm_depth_node"
    proc = subprocess.Popen(
        [str(exe), "--ros-args", "-p", "max_disparity:=64"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    active = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "active:" in line:
                active.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert active.wait(60), "".join(lines)[-3000:]
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
    output = "".join(lines)
    assert proc.returncode == 0, output[-3000:]
    assert "never retrieved" not in output and "Traceback" not in output, output[-3000:]


@pytest.mark.slow
def test_launch_file_targets_exist_in_the_install_space(built: tuple[Path, dict[str, str]],
                                                       tmp_path: Path) -> None:
    workspace, env = built
    prefix = workspace / "install" / PACKAGE
    got = _python(
        "import json, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'test')!r})\n"
        "from pathlib import Path\n"
        "import test_launch_file as t\n"
        "from scene_perception.ros import launch_plan\n"
        f"prefix = Path({str(prefix)!r})\n"
        f"launch_file = prefix / 'share' / {PACKAGE!r} / 'launch' / 'perception.launch.py'\n"
        f"checked = t.check_launch_targets(launch_file, None, prefix / 'lib' / {PACKAGE!r},\n"
        f"                                 Path({str(tmp_path)!r}))\n"
        "print(json.dumps({'checked': checked, 'plan': launch_plan.__file__}))\n",
        env, tmp_path,
    )
    assert sorted(got["checked"]) == sorted(EXECUTABLES)
    assert got["plan"].startswith(str(prefix)), got["plan"]


@pytest.mark.ros
@pytest.mark.slow
def test_colcon_test_runs_the_registered_suite(built: tuple[Path, dict[str, str]]) -> None:
    workspace, _ = built
    env = _base_env()
    build_dir = workspace / "build" / PACKAGE
    listed = subprocess.run(["ctest", "-N"], cwd=build_dir, env=env, capture_output=True, text=True,
                            timeout=60)
    registered = set(re.findall(r"Test\s+#\d+: (\S+)", listed.stdout))
    modules = {p.stem for p in (ROOT / "test").glob("test_*.py")}
    assert registered == modules, f"ctest tests != test modules: {registered ^ modules}"

    regex = "^(" + "|".join(COLCON_TEST_SUBSET) + ")$"
    _run([_colcon(), "test", "--packages-select", PACKAGE, "--ctest-args", "-R", regex],
         workspace, env, 600, "colcon test")
    result = subprocess.run(
        [_colcon(), "test-result", "--test-result-base", str(build_dir), "--verbose"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Summary: (\d+) tests, (\d+) errors, (\d+) failures, (\d+) skipped", result.stdout)
    assert match, result.stdout + result.stderr
    tests, errors, failures, _skipped = map(int, match.groups())
    assert tests > 0 and errors == 0 and failures == 0, result.stdout
    results = sorted(p.name for p in (build_dir / "test_results" / PACKAGE).glob("*.xunit.xml"))
    assert results == sorted(f"{name}.xunit.xml" for name in COLCON_TEST_SUBSET)
    # test_model_lookup's install-space check ran (not skipped): the suite saw the install, not the checkout.
    xml = (build_dir / "test_results" / PACKAGE / "test_model_lookup.xunit.xml").read_text()
    name = "test_colcon_test_runs_against_the_install_space"
    case = re.search(rf'<testcase [^>]*name="{name}"[^>]*(/>|>.*?</testcase>)', xml, re.S)
    assert case and "<skipped" not in case.group(0) and "<failure" not in case.group(0), xml[-2000:]


@pytest.mark.slow
def test_symlink_install_resolves_models_from_share(tmp_path_factory: pytest.TempPathFactory) -> None:
    """--symlink-install: share/'s model files are symlinks into src/; share/ still comes before the
    checkout (which the symlinks lead to), and the path reported is the installed one."""
    workspace = tmp_path_factory.mktemp("colcon_ws_symlink")
    env = _build(workspace, "--symlink-install", testing=False)
    lite = workspace / "install" / PACKAGE / "share" / PACKAGE / "models" / "lite.safetensors"
    assert lite.is_symlink()
    got = _check_models_from_share(workspace, env, tmp_path_factory.mktemp("cwd"))
    assert got["dirs"][-1] == str(ROOT / "models"), got["dirs"]
