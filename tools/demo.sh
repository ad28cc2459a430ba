#!/usr/bin/env bash
# Camera-free demo: sets up .venv on first use, then plays synthetic stereo through the live ROS 2 node,
# prints metrics against ground truth and writes out/demo/demo.png.  Extra arguments go to `demo`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/setup_env.sh
exec .venv/bin/scene-perception demo "$@"
