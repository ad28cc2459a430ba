#!/usr/bin/env bash
# One prepared run for the GPU machine (issue 19): verify, time and train, within 8 minutes of wall time.
#
#   bash tools/gpu_run.sh                        # on the GPU machine (the device tool runs it in the checkout)
#   GPU_RUN_SMOKE=1 bash tools/gpu_run.sh        # CPU smoke mode: tiny sizes and budgets (CI runs this)
#   GPU_RUN_PHASES="timings mc" bash tools/gpu_run.sh   # rerun some phases only
#
# The GPU machine has Python 3.12 with torch (CUDA), numpy, OpenCV, safetensors and pytest, but no ROS, no
# rosbags and no network, and this package is not installed there: it runs from the checkout (PYTHONPATH).
# Each phase is its own process with its own timeout (`timeout`), so a hung or killed phase loses only
# itself; every phase writes its results as it goes. Files under $OUT (at most 8, the device tool's limit):
#   summary.json       environment, and per phase: exit code, seconds, and what it wrote (rewritten after each)
#   run.log            stdout/stderr of every phase but the tests
#   tests.log          pytest output of the CUDA tests (and the no-ROS import check)
#   timings.json       benchmarks/torch_device.py rows: network and pipeline, configs x sizes x precision x mode
#   mc_dropout.json    benchmarks/mc_dropout.py rows: scene pipeline vs MC-dropout samples
#   train.json         the training log train_log.jsonl (JSON lines: loss, EPE, samples/s per log step)
#   <name>.safetensors + <name>.json   the trained stereo weights and their model card
#   ablation.json      (phase "ablation", not in the default list: run it as GPU_RUN_PHASES="env ablation")
#                      benchmarks/coverage_ablation.py: one short lite fine-tune per rendered phenomenon
#                      (sky, far, thin, textureless, repetitive, dark, specular, camera effects) and a
#                      control, each scored per phenomenon on validation pairs (issue 22 item 2)
#   adaptation.json    (phase "adapt", not in the default list: GPU_RUN_PHASES="env adapt")
#                      benchmarks/adaptation.py on CUDA: online self-supervised adaptation on the shifted
#                      domain, before/after EPE and photometric error, and the bad stream (issue 26 item 3)
#
# Environment: OUT (default: $GPU_RUN_OUT, else a new temp dir), PYTHON (default python3), GPU_RUN_PHASES
# (default "env tests timings mc train"), GPU_RUN_SMOKE=1, GPU_RUN_TRAIN_MODEL (lite: continue from the
# shipped weights; paper: from scratch), GPU_RUN_TRAIN_MINUTES.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SMOKE="${GPU_RUN_SMOKE:-0}"
PY="${PYTHON:-python3}"
OUT="${OUT:-${GPU_RUN_OUT:-$(mktemp -d -t gpu_run.XXXXXX)}}"
PHASES="${GPU_RUN_PHASES:-env tests timings mc train}"
TRAIN_MODEL="${GPU_RUN_TRAIN_MODEL:-lite}"
mkdir -p "$OUT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
WORK="$(mktemp -d -t gpu_run_work.XXXXXX)"  # checkpoints and caches: not brought back
trap 'rm -rf "$WORK"' EXIT

if [[ "$SMOKE" == 1 ]]; then
  # Phase caps (s). Smoke: seconds on 2 CPU cores; the sizes below are what make it quick.
  CAP_ENV=60 CAP_TESTS=120 CAP_TIMINGS=240 CAP_MC=120 CAP_TRAIN=240 CAP_ABLATION=300 CAP_ADAPT=120
  ABLATION_ARGS=(--smoke --device cpu --probes control thin --minutes 1 --pairs 2)
  ADAPT_ARGS=(--quick --device cpu)
  TIMINGS_ARGS=(--device cpu --configs lite --sizes 64x128 --repeats 2 --warmup 1 --pipelines pipeline
                --budget-s 60)
  MC_ARGS=(--device cpu --samples 0 2 --repeats 1 --warmup 0 --size 96x192)
  TRAIN_ARGS=(--device cpu --steps 4 --batch-size 2 --crop-height 64 --crop-width 128 --image-height 96
              --image-width 192 --max-disparity 32 --num-workers 1 --crops-per-pair 2 --log-every 1
              --checkpoint-every 2 --minutes 2 --no-progress)
else
  # Caps sum to 475 s: the whole run stays inside 8 minutes even if every phase hits its cap. (First run,
  # 2026-12-04: tests needed more than 75 s, timings used 147 of 150, training 156 of 190.)
  CAP_ENV=25 CAP_TESTS=150 CAP_TIMINGS=120 CAP_MC=30 CAP_TRAIN=150
  # Ablation (its own run: env 25 + 420 s): 9 probes x (0.35 min + ~15 s start-up) + scoring ~40 s.
  CAP_ABLATION=420
  # Adaptation (its own run too): 5 minutes of rounds at 20 steps, then the scoring and the bad stream.
  CAP_ADAPT=420
  ADAPT_ARGS=(--device cuda --minutes 5 --stream-frames 96 --eval-pairs 32 --threads 4)
  ABLATION_ARGS=(--device cuda --minutes 0.35 --pairs 24)
  TIMINGS_ARGS=(--device cuda --budget-s 90 --repeats 50 --warmup 5)
  MC_ARGS=(--device cuda --repeats 20 --warmup 3)
  TRAIN_MINUTES="${GPU_RUN_TRAIN_MINUTES:-2.0}"
  # bf16 autocast, data rendered by 14 workers on the 16 cores, 4 random 256x512 crops (v8's frame size)
  # per rendered 384x768 pair: the renderer gives ~100 such pairs/s there, and lite would otherwise wait
  # for data; batch 16.
  TRAIN_ARGS=(--device cuda --amp bf16 --minutes "$TRAIN_MINUTES" --num-workers 14 --crops-per-pair 4
              --batch-size 16 --crop-height 256 --crop-width 512 --image-height 384 --image-width 768
              --log-every 50 --checkpoint-every 1000000 --no-progress)
  if [[ "$TRAIN_MODEL" == lite ]]; then
    # v8's recipe (models/lite.json), continued from the shipped weights. The cosine schedule spans
    # --steps; 3000 is the estimate of what fits the budget (~300-430 samples/s from 14 renderers x 4 crops,
    # batch 16). If the budget stops it earlier the card says so (stopped_by_budget, lr mid-schedule), and
    # the measured samples/s in train.json sizes the next run.
    # Since v11 (2026-12-05) also sky at infinity and surfaces down to 0.25 px, which v11 showed pay (street
    # sky published nearer than 100 m 93.8 -> 10.8 %). Textureless + glossy surfaces (v13, CPU, 2026-12-07)
    # and glossy alone (a probe with a control) cost the sky more than the rules allowed: not added
    # (benchmarks/results/2026-12-07_cpu/{v13,glossy_probe}/README.md).
    TRAIN_ARGS+=(--init-weights models/lite.safetensors --steps 3000 --lr 1e-4 --warmup-steps 50
                 --volume-weight 0.3 --max-disparity 112 --augment --seed 19 --sky-probability 0.3
                 --min-disparity 0.25)
  else
    TRAIN_ARGS+=(--steps 3000 --lr 1e-3 --seed 19)
  fi
fi
[[ -d .cache/textures ]] && TRAIN_ARGS+=(--texture-dir .cache/textures)

log() { printf '[gpu_run %s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }

# summary.json: merge one phase's record in (the env phase adds the "env" block itself); rewritten whole.
record() {  # record PHASE JSON
  "$PY" - "$OUT/summary.json" "$1" "$2" <<'PYEOF'
import json, pathlib, sys
path, phase, value = pathlib.Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
data = json.loads(path.read_text()) if path.exists() else {}
data.setdefault("phases", {})[phase] = value
path.write_text(json.dumps(data, indent=1) + "\n")
PYEOF
}

run_phase() {  # run_phase NAME CAP LOGFILE CMD...
  local name="$1" cap="$2" logfile="$3"; shift 3
  log "phase $name: start (cap ${cap} s)"
  local t0=$SECONDS rc
  timeout --kill-after=10 "$cap" "$@" >>"$logfile" 2>&1
  rc=$?
  local took=$((SECONDS - t0)) status=ok
  [[ $rc -eq 0 ]] || status=failed
  [[ $rc -eq 124 || $rc -eq 137 ]] && status="timed out"
  record "$name" "{\"rc\": $rc, \"status\": \"$status\", \"seconds\": $took, \"cap_s\": $cap}"
  log "phase $name: $status (rc $rc) in ${took} s"
  return 0
}

want() { [[ " $PHASES " == *" $1 "* ]]; }

log "OUT=$OUT smoke=$SMOKE phases: $PHASES"
if want env; then
  run_phase env "$CAP_ENV" "$OUT/run.log" "$PY" - "$OUT/summary.json" "$SMOKE" <<'PYEOF'
"""Versions, the device, and an import of every module outside ros/ (the machine has no ROS)."""
import importlib, json, pathlib, platform, subprocess, sys
import torch
env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
       "cudnn": torch.backends.cudnn.version(), "cuda_available": torch.cuda.is_available(),
       "smoke": sys.argv[2] == "1", "cpu_count": __import__("os").cpu_count()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
               bf16=torch.cuda.is_bf16_supported())
try:
    env["git"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    pass
for name in ("numpy", "cv2", "safetensors", "onnxruntime", "tensorrt", "triton"):
    try:
        env[name] = getattr(importlib.import_module(name), "__version__", "?")
    except ImportError as exc:
        env[name] = f"missing ({exc.__class__.__name__})"
root = pathlib.Path("scene_perception")
failed = {}
for f in sorted(root.rglob("*.py")):
    parts = f.with_suffix("").parts
    if parts[1:2] in (("ros",), ("msg",)):
        continue
    mod = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    try:
        importlib.import_module(mod)
    except Exception as exc:  # noqa: BLE001 - recorded, not raised: the other phases still run
        failed[mod] = f"{type(exc).__name__}: {exc}"
env["import_failures"] = failed
print(json.dumps(env, indent=1))
path = pathlib.Path(sys.argv[1])
data = json.loads(path.read_text()) if path.exists() else {}
data["env"] = env
path.write_text(json.dumps(data, indent=1) + "\n")
sys.exit(1 if failed else 0)
PYEOF
fi
if want tests; then
  run_phase tests "$CAP_TESTS" "$OUT/tests.log" "$PY" -m pytest -q -rs -p no:cacheprovider \
    test/test_cuda.py test/test_no_ros_below_ros.py
fi
if want timings; then
  run_phase timings "$CAP_TIMINGS" "$OUT/run.log" "$PY" benchmarks/torch_device.py "${TIMINGS_ARGS[@]}" \
    --json "$OUT/timings.json"
fi
if want mc; then
  run_phase mc "$CAP_MC" "$OUT/run.log" "$PY" benchmarks/mc_dropout.py "${MC_ARGS[@]}" --json "$OUT/mc_dropout.json"
fi
if want train; then
  NAME="${TRAIN_MODEL}_gpu"
  [[ "$SMOKE" == 1 ]] && NAME="${TRAIN_MODEL}_smoke"
  run_phase train "$CAP_TRAIN" "$OUT/run.log" "$PY" -m scene_perception.cli train stereo --model "$TRAIN_MODEL" \
    --out-dir "$WORK/train" --output-name "$NAME" "${TRAIN_ARGS[@]}"
  # Weights and card back; the metrics log as train.json. Checkpoints stay behind.
  for f in "$WORK/train/$NAME.safetensors" "$WORK/train/$NAME.json"; do
    [[ -f "$f" ]] && cp "$f" "$OUT/"
  done
  [[ -f "$WORK/train/train_log.jsonl" ]] && cp "$WORK/train/train_log.jsonl" "$OUT/train.json"
fi
if want ablation; then
  run_phase ablation "$CAP_ABLATION" "$OUT/run.log" "$PY" benchmarks/coverage_ablation.py "${ABLATION_ARGS[@]}" \
    --json "$OUT/ablation.json"
fi
if want adapt; then
  run_phase adapt "$CAP_ADAPT" "$OUT/run.log" "$PY" benchmarks/adaptation.py "${ADAPT_ARGS[@]}" \
    --out-dir "$WORK/adapt" --json "$OUT/adaptation.json"
fi
log "done: $(find "$OUT" -type f | wc -l) files in $OUT"
