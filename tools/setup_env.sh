#!/usr/bin/env bash
# Sets up the pip (no ROS install) environment in <repo>/.venv: ROS 2 Kilted wheels from PyPI, the
# project's Python dependencies, our messages (msg/) built with rosidl into the venv, and this repo installed
# editable. Idempotent and incremental: each step keeps a stamp inside the venv (so a new venv redoes
# everything) and is skipped while its inputs are unchanged. Safe to run from any directory.
#
# Environment: PYTHON  interpreter used to create the venv (default python3.11; the ROS wheels are cp311).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
PY="$VENV/bin/python"
BUILD_DIR="$ROOT/.msg_build"
STAMPS="$VENV/.scene_perception_stamps"
T0=$SECONDS

log() { printf '[setup_env %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }
# pip, with its output kept in a log that is shown only when it fails (some machines' pip config makes
# every install print a page of harmless "Location ... is ignored" warnings).
pip_quiet() {
  local pip_log="$STAMPS/pip.log"
  "$PY" -m pip "$@" --progress-bar off >"$pip_log" 2>&1 ||
    { tail -n 40 "$pip_log" >&2; die "pip $* failed (full log: $pip_log)"; }
}

# A value inherited from another venv's Python would stop this venv's interpreter from putting its own
# lib/ on LD_LIBRARY_PATH (ros_wheels_bootstrapper re-execs once and uses this as the guard).
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE

# --- 1. virtual environment -------------------------------------------------------------------------
if [[ ! -x "$PY" ]]; then
  BASE_PY="${PYTHON:-python3.11}"
  command -v "$BASE_PY" >/dev/null || die "$BASE_PY not found (the ROS 2 wheels need CPython 3.11); set PYTHON=..."
  log "creating .venv with $BASE_PY"
  "$BASE_PY" -m venv "$VENV"
fi
PY_VER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
[[ "$PY_VER" == "3.11" ]] || die ".venv has Python $PY_VER; the ROS 2 wheels need 3.11 (remove .venv, set PYTHON)"
SITE="$VENV/lib/python$PY_VER/site-packages"
mkdir -p "$STAMPS"

# --- 2. Python requirements ------------------------------------------------------------------------
REQ_SHA="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [[ "$(cat "$STAMPS/requirements.sha256" 2>/dev/null)" == "$REQ_SHA" ]]; then
  log "requirements: up to date"
else
  log "requirements: pip install -r requirements.txt (first time: a few minutes)"
  pip_quiet install -r requirements.txt
  echo "$REQ_SHA" >"$STAMPS/requirements.sha256"
fi

# --- 3. fix the include dirs the ROS wheels hard-code in their CMake exports ----------------------
# The wheels were built in a manylinux container; their *__rosidl_generator_pyExport.cmake files name
# /opt/python/cp311-cp311/include/python3.11 and .../site-packages/numpy/_core/include, which do not exist
# here. Rewrite them to this interpreter's and numpy's include dirs. Re-run after every requirements install
# (new wheels bring new files); rewriting is idempotent since the rewritten text no longer matches.
if [[ "$(cat "$STAMPS/cmake_fix.sha256" 2>/dev/null)" != "$REQ_SHA" ]]; then
  "$PY" - "$VENV/share" <<'PYEOF'
import pathlib
import re
import sys
import sysconfig

import numpy

py_inc = sysconfig.get_paths()["include"]
if not pathlib.Path(py_inc, "Python.h").is_file():
    sys.exit(f"[setup_env] ERROR: {py_inc}/Python.h missing: install the Python 3.11 headers (python3.11-dev)")
np_inc = numpy.get_include()
# numpy first: the python pattern must not eat into it (they are distinct, but be explicit).
subs = [
    (re.compile(r"/opt/python/[^;\"\s]*?/site-packages/numpy/(?:_core|core)/include"), np_inc),
    (re.compile(r"/opt/python/[^/;\"\s]+/include/python3\.\d+"), py_inc),
]
changed = 0
for path in pathlib.Path(sys.argv[1]).rglob("*.cmake"):
    text = path.read_text()
    if "/opt/python/" not in text:
        continue
    new = text
    for pattern, repl in subs:
        new = pattern.sub(lambda _m, r=repl: r, new)
    if new != text:
        path.write_text(new)
        changed += 1
print(f"[setup_env] cmake exports: rewrote include dirs in {changed} file(s)")
PYEOF
  echo "$REQ_SHA" >"$STAMPS/cmake_fix.sha256"
fi

# --- 4. build msg/ with rosidl and install it into the venv ---------------------------------------
MSG_SHA="$(
  {
    echo "$REQ_SHA"
    sha256sum msg/*.msg CMakeLists.txt package.xml
  } | sha256sum | cut -d' ' -f1
)"
GEN="$SITE/scene_perception"
if [[ "$(cat "$STAMPS/msgs.sha256" 2>/dev/null)" == "$MSG_SHA" && -f "$GEN/msg/_label_info.py" ]] &&
  compgen -G "$GEN/scene_perception_s__rosidl_typesupport_c*.so" >/dev/null; then
  log "messages: up to date"
else
  log "messages: building msg/ with rosidl (about 10 s)"
  # A build dir configured for another checkout (moved or copied repo) cannot be reused.
  if [[ -f "$BUILD_DIR/CMakeCache.txt" ]] &&
    ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$ROOT" "$BUILD_DIR/CMakeCache.txt"; then
    rm -rf "$BUILD_DIR"
  fi
  # Drop what a previous build generated and installed, so a removed .msg leaves no stale module, header or
  # interface file behind: rosidl never deletes the outputs of a .msg that is gone, and the Python install
  # step copies its whole output directory. So: every file the last install put into the venv (its
  # manifest: site-packages, include/, share/, lib/), then the build dir itself (rebuilt from scratch).
  if [[ -f "$BUILD_DIR/install_manifest.txt" ]]; then
    while IFS= read -r installed; do
      if [[ "$installed" == "$VENV"/* ]]; then rm -f -- "$installed"; fi
    done <"$BUILD_DIR/install_manifest.txt"
  fi
  rm -rf "$GEN" "$BUILD_DIR"
  mkdir -p "$BUILD_DIR"
  BUILD_LOG="$BUILD_DIR/build.log"
  export AMENT_PREFIX_PATH="$VENV"
  cmake -S "$ROOT" -B "$BUILD_DIR" \
    -DSCENE_PERCEPTION_INSTALL_PYTHON=OFF \
    -DCMAKE_PREFIX_PATH="$VENV" \
    -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$PY" \
    -DBUILD_TESTING=OFF >"$BUILD_LOG" 2>&1 ||
    { tail -n 40 "$BUILD_LOG" >&2; die "cmake configure failed (full log: $BUILD_LOG)"; }
  { make -C "$BUILD_DIR" -j2 && make -C "$BUILD_DIR" install; } >>"$BUILD_LOG" 2>&1 ||
    { tail -n 40 "$BUILD_LOG" >&2; die "message build failed (full log: $BUILD_LOG)"; }

  # Namespace clash: rosidl installed the generated half of `scene_perception` (msg/ and the typesupport
  # .so files) as a regular package with its own empty __init__.py and an egg-info. Remove both:
  # - without __init__.py the directory is only a namespace portion, so the import system picks our
  #   editable source package (a regular package) instead, whose pkgutil.extend_path adds this directory
  #   to scene_perception.__path__: scene_perception.msg and the .so files then import from here;
  # - the egg-info claims the distribution name scene_perception; pip would treat it as an installed copy
  #   and, on `pip install -e .`, "uninstall" it by deleting the top-level directory it names, i.e. the
  #   generated messages.
  rm -f "$GEN/__init__.py"
  rm -rf "$GEN/__pycache__"/__init__.* "$SITE"/scene_perception-*.egg-info
  echo "$MSG_SHA" >"$STAMPS/msgs.sha256"
  log "messages: installed into .venv"
fi

# --- 5. this repo, editable ------------------------------------------------------------------------
EDITABLE_URL="$("$PY" -I - <<'PYEOF'
import importlib.metadata as md
import json

try:
    info = json.loads(md.distribution("scene_perception").read_text("direct_url.json") or "{}")
except md.PackageNotFoundError:
    info = {}
print(info.get("url", "") if info.get("dir_info", {}).get("editable") else "")
PYEOF
)"
if [[ "$EDITABLE_URL" == "file://$ROOT" ]]; then
  log "editable install: up to date"
else
  log "editable install: pip install -e . --no-deps"
  pip_quiet install --no-deps -e .
fi

"$PY" -c 'from scene_perception.msg import LabelInfo, VisionClass' ||
  die "scene_perception.msg does not import; remove $STAMPS and re-run"
log "done"
