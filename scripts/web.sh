#!/usr/bin/env bash
# Train in the browser: builds the web crate (web/) for WebAssembly and serves the page and the
# MNIST files on 127.0.0.1.
#
#   scripts/web.sh            build, then serve on http://127.0.0.1:8000/web/ (PORT=... to change)
#   scripts/web.sh build      build only (what CI and the browser test run)
#
# Installs what the build needs when it is missing: the wasm32-unknown-unknown target (rustup)
# and the wasm-bindgen command line, at exactly the version of the `wasm-bindgen` crate in
# Cargo.lock (the two must match; the install compiles it, a few minutes, once).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-serve}"
out=web/pkg

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

# The wasm-bindgen version Cargo.lock pins.
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
[ -n "$version" ] || { echo "web.sh: no wasm-bindgen in Cargo.lock"; exit 1; }
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$version" ]; then
  echo "web.sh: installing wasm-bindgen-cli $version (found: ${have:-none})"
  # --locked builds it with the versions its release was tested with; if the registry no longer
  # offers one of them (yanked), fall back to the newest compatible ones.
  cargo install --locked wasm-bindgen-cli --version "$version" \
    || cargo install wasm-bindgen-cli --version "$version"
fi

cargo build --release --locked -p gpu-mlp-web --target wasm32-unknown-unknown
wasm-bindgen --target web --no-typescript --out-dir "$out" \
  target/wasm32-unknown-unknown/release/gpu_mlp_web.wasm
echo "web.sh: built $out/ ($(du -h "$out/gpu_mlp_web_bg.wasm" | cut -f1) of WebAssembly)"

[ "$mode" = build ] && exit 0
port="${PORT:-8000}"
# The page fetches ../data/mnist/*.gz: serve the repository's root, open web/.
echo "web.sh: open http://127.0.0.1:$port/web/ in a browser with WebGPU (Chrome, Edge; Ctrl-C stops)"
exec python3 -m http.server "$port" --bind 127.0.0.1
