#!/usr/bin/env bash
# Screenshot of the page `dvc plots diff` writes for two experiments (docs/plots-diff.png).
#   docs/screenshot.sh PROJECT EXP_A EXP_B [OUT.png]     # dvc and chromium on PATH
# PROJECT: a folder of this pipeline holding both experiments (dvc exp run -n EXP_A ...), with
# this repo's plots.html_template. The page goes to a temp folder and headless Chromium renders
# it with the network cut, so the picture shows what an offline reader sees.
# SIZE (width,height in CSS pixels, default 1800,2760): the window, i.e. the picture; the page of
# two experiments is about that wide (two PNGs side by side) and tall.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 PROJECT EXP_A EXP_B [OUT.png]" >&2
  exit 2
fi
out="$(realpath -m "${4:-$(dirname "$0")/plots-diff.png}")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$1" && dvc plots diff "$2" "$3" -o "$tmp/page")
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --host-resolver-rules='MAP * ~NOTFOUND' --user-data-dir="$tmp/profile" \
  --hide-scrollbars --window-size="${SIZE:-1800,2760}" --virtual-time-budget=20000 \
  --screenshot="$out" "file://$tmp/page/index.html"
echo "wrote $out"
