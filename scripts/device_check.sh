#!/usr/bin/env bash
# Device check for a machine with an NVIDIA GPU: environment, optional tinycudann build, gsplat's
# CUDA build, the `gpu`-marked tests, and the CUDA wall time of the RGB field, mask field and
# render of one synthetic scene, for both backends (nerf, gaussians). Run from the repository root:
#
#   OUT=/some/folder bash scripts/device_check.sh
#
# Everything goes to $OUT/device_check.log (a summary table at its end, also printed). A failing
# step is reported and the next one still runs; the whole check stops starting new steps after
# DEVICE_CHECK_BUDGET seconds (default 460: the check ends within 8 minutes).
#
# Python: the project's venv when `make install` works (or has worked) here. Without network
# (the default: pip gets PIP_NO_INDEX=1; DEVICE_CHECK_ONLINE=1 lifts it) pip installs only wheels
# from a `.whl/` folder in the repository root; if `make install` cannot (its pinned torch is not
# there), the check runs on the machine's own python3 and its packages, with this repository on
# PYTHONPATH and the wheels of `.whl/` unpacked beside it. The stages need segment-anything
# (imported by `maskfield masks` even for the simulated teacher): on a machine without it, carry
# it, e.g. `pip download --no-deps --only-binary=:all: segment-anything -d .whl`.
#
# Settings (environment):
#   DEVICE_CHECK_DEVICE      cuda (default) or cpu: a dry run of the same steps on a machine without a GPU
#   DEVICE_CHECK_SCENE       JSON of `maskfield synthesize --settings` (default {}: the demo's 160x120
#                            room); e.g. '{"width": 640, "height": 480}' for a larger scene
#   DEVICE_CHECK_ITERATIONS  if set, the RGB and mask fields train this many steps instead of the config's
#   DEVICE_CHECK_BUDGET      seconds after which no new step starts (default 460)
#   DEVICE_CHECK_PYTHON      the interpreter used when `make install` fails (default python3)
#   TCNN_SRC                 tiny-cuda-nn source tree (default .whl/tiny-cuda-nn); built only if present
#   TCNN_CUDA_ARCHITECTURES  compute capability to build tinycudann for (default 90: H100/H200)
#   TORCH_EXTENSIONS_DIR     where gsplat's JIT-compiled CUDA extension is built and kept (default
#                            build/torch_extensions: ignored by git, so a second run reuses it)
set -u
export LC_NUMERIC=C  # EPOCHREALTIME with a decimal point

ROOT=$(pwd)
if [[ ! -f "$ROOT/pyproject.toml" || ! -d "$ROOT/maskfield" ]]; then
    echo "device_check.sh: run it from the repository root (no pyproject.toml and maskfield/ here)." >&2
    exit 2
fi
OUT=${OUT:-$ROOT/device_check_out}
mkdir -p "$OUT"
LOG=$OUT/device_check.log
: >"$LOG"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/maskfield-device-check.XXXXXX")
SUMMARY=$WORK/summary.tsv
DEVICE=${DEVICE_CHECK_DEVICE:-cuda}
SCENE_SETTINGS=${DEVICE_CHECK_SCENE:-"{}"}
ITERATIONS=${DEVICE_CHECK_ITERATIONS:-}
DEADLINE=$((SECONDS + ${DEVICE_CHECK_BUDGET:-460}))
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$ROOT/build/torch_extensions}
export PY=python3
PIP_INTO=()   # extra `pip install` flags: --target when installing beside the machine's python

note() { echo "$*" | tee -a "$LOG"; }

# step NAME MAX_SECONDS COMMAND...: run COMMAND with its output in the log, under a time limit
# that never passes the deadline; record status and wall seconds in the summary.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - SECONDS))
    if ((left < 15)); then
        note "== $name: SKIPPED (time budget spent)"
        printf '%s\tskipped\t-\n' "$name" >>"$SUMMARY"
        return 1
    fi
    ((limit > left)) && limit=$left
    note "== $name (limit ${limit} s): $*"
    if declare -F "$1" >/dev/null; then  # a function of this script: run it in a child bash
        export -f "$1"
        set -- bash -c '"$@"' bash "$@"
    fi
    local start=$EPOCHREALTIME
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    local wall
    wall=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    local status=ok
    ((rc == 124 || rc == 137)) && status="TIMEOUT after ${limit} s"
    ((rc != 0 && rc != 124 && rc != 137)) && status="FAILED (exit $rc)"
    note "== $name: $status, ${wall} s"
    printf '%s\t%s\t%s\n' "$name" "$status" "$wall" >>"$SUMMARY"
    return "$rc"
}

system_info() {
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi
        nvidia-smi -L
    else
        echo "nvidia-smi: not on PATH"
    fi
    command -v nvcc >/dev/null && nvcc --version | tail -n 2
    echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset} SLURM_JOB_ID=${SLURM_JOB_ID-unset}"
}

torch_info() {
    "$PY" - <<'EOF'
import sys, torch
print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "built for CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())
print("cuda available:", torch.cuda.is_available())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"device {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
EOF
}

# The venv of `make install` when it works here; else the machine's python3 (see the header).
choose_python() {
    if [[ -z ${DEVICE_CHECK_ONLINE:-} ]]; then export PIP_NO_INDEX=1; fi
    if [[ -d $ROOT/.whl ]]; then export PIP_FIND_LINKS=$ROOT/.whl; fi
    if step "make install" 240 make -C "$ROOT" install PYTHON=python3; then
        PY=$ROOT/.venv/bin/python
        return 0
    fi
    PY=${DEVICE_CHECK_PYTHON:-python3}
    note "make install failed (offline without the pinned wheels?); using $(command -v "$PY") and its own packages."
    PIP_INTO=(--target "$WORK/site")
    mkdir -p "$WORK/site"
    export PYTHONPATH="$ROOT:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    local wheels=("$ROOT"/.whl/*.whl)
    if [[ -e ${wheels[0]} ]]; then
        step "wheels from .whl/" 120 "$PY" -m pip install --no-index --no-deps "${PIP_INTO[@]}" "${wheels[@]}"
    fi
}

check_imports() {
    "$PY" - <<'EOF'
import importlib
missing = []
for name in ["torch", "numpy", "h5py", "scipy", "pandas", "PIL", "yaml", "tqdm", "cv2", "segment_anything", "gsplat", "pytest", "maskfield"]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
print("missing:", "; ".join(missing) if missing else "none")
raise SystemExit(1 if missing else 0)
EOF
}

build_tcnn() {
    local src=${TCNN_SRC:-$ROOT/.whl/tiny-cuda-nn}
    if [[ ! -f $src/bindings/torch/setup.py ]]; then
        note "== tinycudann: no source at $src (set TCNN_SRC); not built, the pure-torch hash grid is used."
        printf 'tinycudann build\tnot attempted (no source)\t-\n' >>"$SUMMARY"
        return 0
    fi
    TCNN_CUDA_ARCHITECTURES=${TCNN_CUDA_ARCHITECTURES:-90} step "tinycudann build" 200 \
        "$PY" -m pip install --no-index --no-build-isolation ${PIP_INTO[@]+"${PIP_INTO[@]}"} "$src/bindings/torch"
    step "tinycudann import" 60 "$PY" -c "import tinycudann; print('tinycudann', tinycudann.__file__)"
}

# gsplat compiles its CUDA kernels on first use (needs nvcc; minutes): build them here, in a step of
# their own, so that a failed or slow build is named as such and the gpu tests find them built.
build_gsplat() {
    "$PY" - <<'EOF'
import os
from gsplat.cuda._backend import _C
if _C is None:
    raise SystemExit("gsplat found no CUDA toolkit (nvcc); its CUDA path cannot be used or tested")
print("gsplat CUDA extension:", getattr(_C, "__file__", _C), "in", os.environ.get("TORCH_EXTENSIONS_DIR"))
EOF
}

# One synthetic room through the GPU stages, with the demo's settings for it (config/config.yaml).
time_stages() {
    local d=$WORK/room scene rgb_it="" mask_it=""
    scene=(--layout replica --scene-dir "$d/scene" --dataset synthetic)
    if [[ -n $ITERATIONS ]]; then rgb_it=", \"iterations\": $ITERATIONS"; mask_it=", \"train\": {\"iterations\": $ITERATIONS}"; fi
    local mf=("$PY" -m maskfield --gpus 1)
    step "synthesize" 150 "$PY" -m maskfield synthesize --layout replica --settings "$SCENE_SETTINGS" --out "$d/scene" || return 1
    step "masks (simulated)" 60 "${mf[@]}" masks "${scene[@]}" --source simulated --settings '{"seed": 0}' --out "$d/masks.h5"
    step "embed (simulated)" 60 "${mf[@]}" embed "${scene[@]}" --masks "$d/masks.h5" --source simulated \
        --settings '{"seed": 0}' --out "$d/embeddings.h5"
    step "train-rgb" 240 "${mf[@]}" train-rgb "${scene[@]}" --backend nerf \
        --settings "{\"seed\": 0, \"depth_weight\": 0.1, \"device\": \"$DEVICE\"$rgb_it}" --out "$d/rgb-nerf.pt" &&
        cat "$d/rgb-nerf.json" >>"$LOG"
    step "geometry" 120 "${mf[@]}" geometry "${scene[@]}" --rgb "$d/rgb-nerf.pt" \
        --settings "{\"surface\": \"median\", \"device\": \"$DEVICE\"}" --out "$d/geometry-nerf.h5"
    step "train-mask" 240 "${mf[@]}" train-mask "${scene[@]}" --geometry "$d/geometry-nerf.h5" --masks "$d/masks.h5" \
        --embeddings "$d/embeddings.h5" --backend nerf --method maskfield \
        --settings "{\"seed\": 0, \"loss\": {\"exclusive\": 0.2}, \"device\": \"$DEVICE\"$mask_it}" --out "$d/maskfield-nerf.pt"
    step "render" 120 "${mf[@]}" render "${scene[@]}" --geometry "$d/geometry-nerf.h5" \
        --checkpoint "$d/maskfield-nerf.pt" --device "$DEVICE" --out "$d/renders.h5"
    step "train-rgb (gaussians)" 240 "${mf[@]}" train-rgb "${scene[@]}" --backend gaussians \
        --settings "{\"seed\": 0, \"device\": \"$DEVICE\"$rgb_it}" --out "$d/rgb-gaussians.pt" &&
        cat "$d/rgb-gaussians.json" >>"$LOG"
    step "geometry (gaussians)" 120 "${mf[@]}" geometry "${scene[@]}" --backend gaussians --rgb "$d/rgb-gaussians.pt" \
        --settings "{\"device\": \"$DEVICE\"}" --out "$d/geometry-gaussians.h5"
    step "train-mask (gaussians)" 240 "${mf[@]}" train-mask "${scene[@]}" --geometry "$d/geometry-gaussians.h5" \
        --masks "$d/masks.h5" --embeddings "$d/embeddings.h5" --backend gaussians --method maskfield \
        --settings "{\"seed\": 0, \"loss\": {\"exclusive\": 0.2}, \"device\": \"$DEVICE\"$mask_it}" \
        --out "$d/maskfield-gaussians.pt"
    step "render (gaussians)" 120 "${mf[@]}" render "${scene[@]}" --geometry "$d/geometry-gaussians.h5" \
        --checkpoint "$d/maskfield-gaussians.pt" --device "$DEVICE" --out "$d/renders-gaussians.h5"
}

note "maskfield device check: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
note "device $DEVICE, scene settings $SCENE_SETTINGS, iterations ${ITERATIONS:-config}, work folder $WORK"
printf 'step\tstatus\twall s\n' >"$SUMMARY"
step "system" 30 system_info
choose_python
step "torch" 60 torch_info
step "imports" 60 check_imports
build_tcnn
if [[ $DEVICE == cuda ]]; then
    step "gsplat CUDA build" 300 build_gsplat
fi
# Collecting every test module imports what each needs (snakemake, pycolmap...); one that cannot be
# imported here must not stop the gpu tests in the others.
step "pytest -m gpu" 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider --continue-on-collection-errors "$ROOT/tests"
result=$(grep -E "^=*.*(passed|failed|skipped|deselected|error|no tests ran).* in [0-9.]+s" "$LOG" | tail -n 1)
printf 'pytest result\t%s\t-\n' "${result:-none (see the log)}" >>"$SUMMARY"
time_stages
note ""
note "summary (wall seconds of each command, Python start and imports included):"
if command -v column >/dev/null; then column -t -s $'\t' "$SUMMARY"; else cat "$SUMMARY"; fi | tee -a "$LOG"
rm -rf "$WORK"
