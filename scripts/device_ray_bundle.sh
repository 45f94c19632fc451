#!/usr/bin/env bash
# Build a trimmed Ray for a GPU machine that has no network and takes files only through the
# working-tree upload (64 MiB in all), for `text4d batch` / `text4d bench batch` there.
#
# What it makes: .devtmp/ray/ray_bundle.tar.xz (about 17 MB; git-ignored through /.devtmp/), the
# extracted site-packages files of ray 2.52.0 for CPython 3.12 (manylinux x86_64) plus the
# dependencies Ray core needs that the GPU machine may lack: msgpack, protobuf, jsonschema,
# referencing, jsonschema-specifications, rpds-py, attrs. Not bundled, because the GPU machine has
# them already: click, packaging, pyyaml, requests (text4d's own install), filelock and
# typing_extensions (torch's requirements). Ray's vendored aiohttp (runtime-env agent) and psutil
# stay inside ray/. Removed from ray: what a one-node `ray.init()` with tasks and actors never
# loads -- the Java jars, rllib, tune, train, serve, data, air, llm, workflow, the dashboard's web
# front end, tests, *.pyi and __pycache__. Kept: ray/_raylet.so, ray/core/src/ray/raylet/raylet,
# ray/core/src/ray/gcs/gcs_server, ray/_private, ray/dashboard's Python (the agent and the
# usage-stats head that ray.init starts), the autoscaler's monitor.
#
# Usage (from the repository root, on a machine with network and pip):
#   bash scripts/device_ray_bundle.sh                 # cp312 bundle -> .devtmp/ray/ray_bundle.tar.xz
#   PY=3.11 OUT=.devtmp/ray311 bash scripts/device_ray_bundle.sh --check
#                                                     # the same trimming for this machine's Python,
#                                                     # then a one-node ray.init + task + actor smoke
#                                                     # test in a clean venv (only for a PY you have)
# Wheels are taken from $WHEELS (default /tmp/raywhl) when there, otherwise downloaded into it.
#
# On the GPU machine (the bundle travels as an ignored path: run's carry [".devtmp/ray"]):
#   mkdir -p /tmp/site && tar xJf .devtmp/ray/ray_bundle.tar.xz -C /tmp/site && python3 /tmp/site/ray_bundle_prune.py && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
#   python3 -c "import ray; print(ray.__version__)"
# ray_bundle_prune.py deletes each bundled dependency the machine's Python already has in a version
# Ray accepts, so /tmp/site never shadows an installed package (tested: ray 2.52 runs on protobuf
# 5.29 and 7.36). Ray's workers, raylet and agents inherit PYTHONPATH from the process calling ray.init().
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-3.12}
OUT=${OUT:-.devtmp/ray}
WHEELS=${WHEELS:-/tmp/raywhl}
RAY_VERSION=2.52.0
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1
PIP=${PIP:-python3 -m pip}
TAG=cp${PY/./}

# Ray core's dependencies (its wheel's Requires-Dist without extras, and theirs), minus the ones
# the GPU machine already has (see the top). Versions current for ray 2.52 (late 2025).
DEPS=(
  "msgpack==1.1.2"
  "protobuf==5.29.5"
  "jsonschema==4.25.1"
  "jsonschema-specifications==2025.9.1"
  "referencing==0.36.2"
  "rpds-py==0.27.1"
  "attrs==25.4.0"
)

mkdir -p "$WHEELS"
pick() {  # the wheel of NAME==VER in $WHEELS that fits $PY
  local name=${1%%==*} ver=${1##*==} w
  for w in "$WHEELS/${name//-/_}-${ver}-"*.whl "$WHEELS/${name}-${ver}-"*.whl; do
    [ -e "$w" ] || continue
    case "$w" in *-py3-none-any.whl|*-py2.py3-none-any.whl|*-abi3-*.whl|*-${TAG}-${TAG}-*.whl) echo "$w"; return 0 ;; esac
  done
  echo "no wheel for $1 ($TAG) in $WHEELS" >&2
  return 1
}

download() {  # download NAME==VER for $PY unless a fitting wheel is already in $WHEELS
  pick "$1" >/dev/null 2>&1 && return 0
  $PIP download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" "$1"
}

for spec in "ray==$RAY_VERSION" "${DEPS[@]}"; do
  download "$spec"
done

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/ray-bundle.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
SITE=$STAGE/site
mkdir -p "$SITE"
for spec in "ray==$RAY_VERSION" "${DEPS[@]}"; do
  wheel=$(pick "$spec")
  unzip -q -o "$wheel" -d "$SITE"   # unzip keeps the executables' mode bits
done

# -- trim ray -------------------------------------------------------------------------------------
R=$SITE/ray
rm -rf "$R"/{jars,rllib,tune,train,serve,data,air,llm,workflow} "$R/dashboard/client" \
  "$R/setup-dev.py" "$R/nightly-wheels.yaml"
find "$SITE" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
find "$SITE" -name '*.pyi' -delete
# the dist-info RECORD lists removed files; pip would complain on uninstall only (never done here)
for bin in "$R/core/src/ray/raylet/raylet" "$R/core/src/ray/gcs/gcs_server"; do
  [ -f "$bin" ] || { echo "missing $bin in the ray wheel" >&2; exit 1; }
  chmod 755 "$bin"
done

# ray_bundle_prune.py, run once after extracting: a bundled dependency that the machine's Python
# already has in a version Ray accepts is deleted from the bundle folder, so PYTHONPATH never shadows
# an installed package with another version (an older protobuf shadowing a newer one breaks the
# packages generated for the newer one).
cat > "$SITE/ray_bundle_prune.py" <<'EOF'
"""Delete bundled dependencies this machine's Python already has (run: python3 <bundle dir>/ray_bundle_prune.py)."""
import json, os, pathlib, shutil, subprocess, sys

HERE = pathlib.Path(__file__).resolve().parent
# distribution -> (import name, version range Ray / the bundled jsonschema accept)
NEEDS = {
    "msgpack": ("msgpack", ">=1.0.0,<2.0.0"),
    "protobuf": ("google.protobuf", ">=3.20.3"),
    "jsonschema": ("jsonschema", ""),
    "jsonschema-specifications": ("jsonschema_specifications", ">=2023.03.6"),
    "referencing": ("referencing", ">=0.28.4"),
    "rpds-py": ("rpds", ">=0.7.1"),
    "attrs": ("attr", ">=22.2.0"),
}
PROBE = r"""
import importlib, importlib.metadata as md, json, sys
out = {}
for dist, (module, spec) in json.loads(sys.argv[1]).items():
    try:
        importlib.import_module(module)
        version = md.version(dist)
    except Exception:
        continue
    try:
        from packaging.specifiers import SpecifierSet
        ok = not spec or SpecifierSet(spec).contains(version, prereleases=True)
    except Exception:
        ok = True
    if ok:
        out[dist] = version
print(json.dumps(out))
"""
paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and pathlib.Path(p).resolve() != HERE]
env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
have = json.loads(subprocess.run([sys.executable, "-c", PROBE, json.dumps(NEEDS)], env=env, cwd="/", capture_output=True, text=True, check=True).stdout)
for info in sorted(HERE.glob("*.dist-info")):
    name = next((line.split(":", 1)[1].strip() for line in (info / "METADATA").read_text().splitlines() if line.startswith("Name:")), "")
    dist = name.lower().replace("_", "-")
    if dist not in have:
        continue
    for line in (info / "RECORD").read_text().splitlines():
        rel = line.split(",")[0]
        target = (HERE / rel).resolve()
        if rel and HERE in target.parents and target.is_file():
            target.unlink()
    shutil.rmtree(info, ignore_errors=True)
    print(f"using the installed {dist} {have[dist]}, not the bundled one")
for folder in sorted((p for p in HERE.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
    if folder.name != "ray" and not any(folder.iterdir()):
        folder.rmdir()
EOF

mkdir -p "$OUT"
BUNDLE=$OUT/ray_bundle.tar.xz
tar -C "$SITE" -cf - . | xz -9e -T0 > "$BUNDLE.tmp"
mv "$BUNDLE.tmp" "$BUNDLE"
( cd "$SITE" && find . -type f | sort ) > "$OUT/ray_bundle.files"

# -- check the bundle -----------------------------------------------------------------------------
size=$(stat -c %s "$BUNDLE")
echo "$BUNDLE: $((size / 1024 / 1024)) MiB ($size bytes), $(wc -l < "$OUT/ray_bundle.files") files, unpacked $(du -sh "$SITE" | cut -f1)"
[ "$size" -le $((40 * 1024 * 1024)) ] || { echo "bundle over 40 MiB" >&2; exit 1; }
X=$STAGE/extracted
mkdir -p "$X"
tar xJf "$BUNDLE" -C "$X"
for need in ray/_raylet.so ray/core/src/ray/raylet/raylet ray/core/src/ray/gcs/gcs_server \
    ray/_private/worker.py ray/_private/node.py ray/_private/workers/default_worker.py \
    ray/_private/runtime_env/agent/main.py ray/dashboard/agent.py ray/dashboard/dashboard.py \
    ray/autoscaler/_private/monitor.py ray/_private/log_monitor.py ray/core/generated/common_pb2.py \
    ray/thirdparty_files/psutil/__init__.py msgpack/__init__.py google/protobuf/__init__.py \
    jsonschema/__init__.py referencing/__init__.py rpds/__init__.py attr/__init__.py attrs/__init__.py \
    jsonschema_specifications/__init__.py ray_bundle_prune.py; do
  [ -e "$X/$need" ] || { echo "bundle lacks $need" >&2; exit 1; }
done
for bin in ray/core/src/ray/raylet/raylet ray/core/src/ray/gcs/gcs_server; do
  [ -x "$X/$bin" ] || { echo "$bin is not executable in the bundle" >&2; exit 1; }
done
echo "bundle extracts; raylet, gcs_server, _raylet.so, ray/_private and the deps are in it"
echo "install on the GPU machine: mkdir -p /tmp/site && tar xJf $BUNDLE -C /tmp/site && python3 /tmp/site/ray_bundle_prune.py && export PYTHONPATH=/tmp/site\${PYTHONPATH:+:\$PYTHONPATH}"

[ "$CHECK" = 1 ] || exit 0
# -- smoke test with this machine's Python (PY must match it) ----------------------------------------
HOST_PY=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
[ "$HOST_PY" = "$PY" ] || { echo "--check needs PY=$HOST_PY (this machine's Python), got $PY" >&2; exit 1; }
VENV=$STAGE/venv
python3 -m venv --without-pip "$VENV"   # no site-packages: only the bundle and what the GPU machine has
PRESENT=$STAGE/present
mkdir -p "$PRESENT"
python3 - "$PRESENT" <<'EOF'
# copy the packages the GPU machine is assumed to have (see the top) from this Python's site-packages
import importlib, pathlib, shutil, sys
dest = pathlib.Path(sys.argv[1])
for name in ("click", "packaging", "yaml", "_yaml", "requests", "urllib3", "idna", "charset_normalizer", "certifi", "filelock", "typing_extensions"):
    try:
        mod = importlib.import_module(name)
    except ImportError:
        continue
    path = pathlib.Path(mod.__file__)
    if path.name == "__init__.py":
        shutil.copytree(path.parent, dest / path.parent.name, dirs_exist_ok=True)
    else:
        shutil.copy2(path, dest / path.name)
EOF
cd "$STAGE"
PYTHONPATH="$X:$PRESENT" "$VENV/bin/python" "$X/ray_bundle_prune.py"   # nothing installed there: prunes nothing
PYTHONPATH="$X:$PRESENT" "$VENV/bin/python" - <<'EOF'
import os, time
import ray
assert ray.__file__.startswith(os.environ["PYTHONPATH"].split(":")[0]), ray.__file__
t0 = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
print(f"ray {ray.__version__} from {os.path.dirname(ray.__file__)}: init {time.perf_counter() - t0:.1f} s")

@ray.remote
def square(x):
    return x * x

@ray.remote(num_cpus=1, max_restarts=0)
class Counter:
    def __init__(self):
        self.n = 0
    def add(self):
        self.n += 1
        return self.n, os.getpid()

assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
c = Counter.remote()
assert [ray.get(c.add.remote())[0] for _ in range(3)] == [1, 2, 3]
ray.kill(c, no_restart=True)
assert ray.nodes()[0]["Alive"] and ray.cluster_resources()["CPU"] == 2
ray.shutdown()
print("one-node ray.init, tasks, actors, kill, shutdown: ok")
EOF
