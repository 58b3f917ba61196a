#!/usr/bin/env bash
# Here, before a GPU slot: the wheels bench/gpu_run.sh needs that the GPU image (Python 3.12,
# numpy 2.5, torch 2.11, triton 3.6; see the device notes) lacks, for Python 3.12.  One device
# call carries at most 64 MiB and ray's wheel alone is ~79 MB, so the wheels are split over
# two folders, .whl-a/ and .whl-b/ (ray cut in two parts), carried by two calls.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl-\*/' .git/info/exclude 2>/dev/null || echo '/.whl-*/' >> .git/info/exclude
rm -rf .whl-a .whl-b /tmp/gpu-wheels && mkdir -p .whl-a .whl-b /tmp/gpu-wheels/extra
get=(python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp
     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
"${get[@]}" --no-deps -d /tmp/gpu-wheels recbole==1.2.1 colorlog==4.7.2 thop==0.1.1.post2209072238 \
  texttable==1.7.2 plotly==7.1.0 mambapy==1.2.0 ray==2.60.0
# ray's and ray[tune]'s requirements the image lacks, resolved together; numpy, protobuf,
# typing_extensions and attrs are the image's own
"${get[@]}" -d /tmp/gpu-wheels/extra jsonschema tensorboardX pydantic colorama==0.4.4
rm -f /tmp/gpu-wheels/extra/{numpy,protobuf,typing_extensions,attrs}-*.whl
ray="$(ls /tmp/gpu-wheels/ray-*.whl)"
split -b 40m "$ray" ".whl-a/$(basename "$ray").part-"
mv .whl-a/*.part-ab .whl-b/
cp /tmp/gpu-wheels/extra/*.whl /tmp/gpu-wheels/plotly-*.whl .whl-a/  # call 1 carries < 64 MiB
for f in /tmp/gpu-wheels/*.whl; do [ "$f" = "$ray" ] || [ -e ".whl-a/$(basename "$f")" ] || cp "$f" .whl-b/; done
du -sh .whl-a .whl-b
