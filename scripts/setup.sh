#!/usr/bin/env bash
# Sets nptm up on a fresh Debian/Ubuntu machine: system packages, .venv at the repo root with the
# Python packages, and the compiled extension nptm._C. Each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
STAMPS=$VENV/.nptm-stamps
say() { printf 'setup: %s\n' "$*" >&2; }
digest() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp() { mkdir -p "$STAMPS" && echo "$2" > "$STAMPS/$1"; }

# 1. System packages (FFCV's build needs OpenCV, libjpeg-turbo and pkg-config; the tests start a one-node
#    Slurm with munge to submit studies to).
APT_PKGS=(libopencv-dev libturbojpeg0-dev pkg-config slurm-wlm munge)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  say "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Python packages into .venv.
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; python3 -m venv "$VENV"; }
PY=$VENV/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1
req=$(digest scripts/requirements.txt)
if ! stamp_ok requirements "$req"; then
  say "installing Python packages (torch with CUDA libraries: several GB the first time)"
  "$PY" -m pip install -q -r scripts/requirements.txt
  stamp requirements "$req"
fi

# 3. The extension (CPU kernels always; CUDA kernels when nvcc and a CUDA torch are present).
ext=$(digest setup.py $(find csrc -type f | sort) "$VENV/.nptm-stamps/requirements")
if ! stamp_ok extension "$ext" || ! ls nptm/_C*.so >/dev/null 2>&1; then
  say "compiling nptm._C (a few minutes with CUDA on 2 cores)"
  log=$VENV/nptm-build.log
  if ! MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" setup.py build_ext --inplace > "$log" 2>&1; then
    tail -n 40 "$log" >&2; say "compiling failed; full log: $log"; exit 1
  fi
  grep '^nptm:' "$log" >&2 || true
  stamp extension "$ext"
fi
# Make `import nptm` resolve to this checkout from anywhere (like an editable install).
echo "$ROOT" > "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nptm-checkout.pth"
"$PY" -c 'import nptm.ops as o; print("setup: nptm ready, CUDA kernels compiled in:", o.has_cuda_kernels())' >&2
