#!/usr/bin/env bash
# Build the vendored renderer of the web player export (text4d export RUN --format web):
# three.js + OrbitControls + Spark (@sparkjsdev/spark, World Labs, MIT), bundled by esbuild into one
# classic script, text4d/export/web/vendor/spark-three.js, with both licences beside it.
#
# Run it when the versions below change, and commit the result: the bundle is package data, so users
# and CI need neither npm nor the network to export a player. npm installs into a temporary folder;
# nothing else in the repository changes.
set -euo pipefail
cd "$(dirname "$0")/.."
SPARK_VERSION=2.2.0
THREE_VERSION=0.180.0   # Spark 2.2's peer dependency (three >= 0.180) and the version its docs pin
ESBUILD_VERSION=0.28.2
OUT=text4d/export/web/vendor

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npm install --prefix "$tmp" --no-audit --no-fund --loglevel=error --save-exact \
  "@sparkjsdev/spark@$SPARK_VERSION" "three@$THREE_VERSION" "esbuild@$ESBUILD_VERSION"
cp scripts/web_player_vendor.js "$tmp/entry.js"
"$tmp/node_modules/.bin/esbuild" "$tmp/entry.js" --bundle --format=iife --global-name=T4DVendor --minify \
  --legal-comments=eof --target=es2020 --outfile="$tmp/spark-three.js" --log-level=warning
mkdir -p "$OUT"
{
  echo "/* text4d web player vendor bundle: @sparkjsdev/spark $SPARK_VERSION (MIT), three $THREE_VERSION (MIT)."
  echo "   Built by scripts/build_web_player.sh with esbuild $ESBUILD_VERSION; licences in LICENSE.spark, LICENSE.three. */"
  cat "$tmp/spark-three.js"
} > "$OUT/spark-three.js"
cp "$tmp/node_modules/@sparkjsdev/spark/LICENSE" "$OUT/LICENSE.spark"
cp "$tmp/node_modules/three/LICENSE" "$OUT/LICENSE.three"
echo "wrote $OUT/spark-three.js ($(du -k "$OUT/spark-three.js" | cut -f1) KiB)"
