#!/usr/bin/env bash
# Run HERE (with internet to PyPI), before a device call: fills benchmarks/wheels/ (git-ignored, ~5 MB) with
# what the H200 image lacks: diffusers, websockets and importlib_metadata (diffusers needs it), built for
# the image's Python 3.12 on x86-64. The device call then names benchmarks/wheels in `carry`.
# The wheels are not committed: binaries in git history for a once-a-session machine are not worth it.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf wheels && mkdir -p wheels
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d wheels \
    diffusers==0.42.1 websockets==17.4 importlib_metadata==8.7.0
ls -la wheels
du -sh wheels
