# Sourced by bench/run.sh and bench/cdp_run.sh (from the repository's root): the Python venv with
# the pinned versions, the data of a preset, and the cdp binary.
#
#   bench_env PRESET     sets PY, DATA (target/bench-data/PRESET, generated unless there) and CDP
#
# CDP: the cdp binary to use; default target/release/cdp after `cargo build --release` (set
# CDP=/path/to/cdp to measure a binary built earlier without rebuilding).

# The pinned versions: duckdb is the project's (.ci/run); the data generator's output is the same
# bytes for the same seed, sizes and versions (bench/data.sha256 holds the expected digests).
DUCKDB_VERSION=1.5.6
PYARROW_VERSION=26.0.1
NUMPY_VERSION=2.4.6

bench_env() {
  local preset="$1"
  case "$preset" in small|large) ;; *) echo "--preset is small or large" >&2; exit 1 ;; esac
  local root="$PWD" venv="$PWD/target/bench-venv"
  PY="$venv/bin/python"
  if ! "$PY" -c "import duckdb, pyarrow, numpy, sys; sys.exit((duckdb.__version__, pyarrow.__version__, numpy.__version__) != ('$DUCKDB_VERSION', '$PYARROW_VERSION', '$NUMPY_VERSION'))" 2>/dev/null; then
    echo "== venv $venv (duckdb $DUCKDB_VERSION, pyarrow $PYARROW_VERSION, numpy $NUMPY_VERSION)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
      "duckdb==$DUCKDB_VERSION" "pyarrow==$PYARROW_VERSION" "numpy==$NUMPY_VERSION"
  fi

  DATA="$PWD/target/bench-data/$preset"
  if [ ! -f "$DATA/.complete" ]; then
    echo "== generating the $preset data into $DATA"
    rm -rf "$DATA"
    "$PY" bench/gen_data.py --preset "$preset" --out "$DATA"
    touch "$DATA/.complete"
  fi
  # Same bytes as the reference data? (a warning only: other library versions give other bytes)
  if ! (cd "$DATA" && grep " $preset/" "$root/bench/data.sha256" | sed "s| $preset/| |" | sha256sum --quiet -c - 2>/dev/null); then
    echo "warning: the data in $DATA differs from bench/data.sha256 (other library versions?)" >&2
  fi

  if [ -z "${CDP:-}" ]; then
    echo "== cargo build --release"
    cargo build -q --release
    CDP="$PWD/target/release/cdp"
    CDP_VERSION="cdp $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes') ($CDP)"
  else
    CDP_VERSION="$CDP (built $(date -u -r "$CDP" '+%Y-%m-%d %H:%M UTC'))"
  fi
}
