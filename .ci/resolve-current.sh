#!/usr/bin/env bash
# Resolver proof for the current stack on Python 3.12 and 3.13, without such an
# interpreter: a typical CUDA image's torch 2.11 and numpy 2.5.2 must stay as they are.
#  1. our metadata (its python_version markers) with uv, which evaluates markers for the
#     target Python (pip's --python-version does not: it uses the running interpreter's);
#  2. the README's requirements-file route: RecBole and us as wheels pip takes for that
#     Python with --no-deps, .ci/current-stack.txt resolved with uv (pip cannot resolve
#     torch 2.11's CUDA wheels from this index);
#  3. and the reason for all this: pip cannot resolve RecBole 1.2.1 with its own requirements.
# Prints one line per check; exits non-zero if 1 or 2 fails or 3 unexpectedly resolves.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python -m pip install -q uv
python -m pip wheel -q --no-deps . -w "$tmp/wheel" 2>/dev/null
wheel="$(ls "$tmp"/wheel/recbole_mamba-*.whl)"
printf 'torch==2.11.0\nnumpy==2.5.2\n' > "$tmp/image.txt"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for v in 3.12 3.13; do
  uv pip compile --quiet --python-version "$v" --python-platform x86_64-manylinux_2_28 --only-binary :all: \
    --extra test pyproject.toml "$tmp/image.txt" -o "$tmp/lock-$v.txt"
  echo "python $v, metadata (uv): $(grep -E '^(numpy|pandas|ray|torch)==' "$tmp/lock-$v.txt" | tr '\n' ' ')"
  dry=(python -m pip install --dry-run --ignore-installed --only-binary=:all: --python-version "$v" "${platforms[@]}"
       --target "$tmp/target")
  "${dry[@]}" -q --no-deps recbole==1.2.1 "$wheel"
  uv pip compile --quiet --python-version "$v" --python-platform x86_64-manylinux_2_28 --only-binary :all: \
    .ci/current-stack.txt "$tmp/image.txt" -o "$tmp/req-$v.txt"
  echo "python $v, requirements file (uv): $(grep -E '^(numpy|pandas|ray|torch)==' "$tmp/req-$v.txt" | tr '\n' ' ')"
  if "${dry[@]}" -q recbole==1.2.1 >/dev/null 2>&1; then
    echo "python $v: recbole==1.2.1 with its own requirements resolved; the --no-deps route may no longer be needed" >&2
    exit 1
  fi
  echo "python $v: recbole==1.2.1 with its own requirements does not resolve (ray<=2.6.3), as expected"
done
