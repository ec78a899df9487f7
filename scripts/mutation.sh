#!/usr/bin/env bash
# Mutation testing with mutmut 3: deliberate small bugs in the library's core modules (aligner, aligner files, the
# tensors-only unpickler, the VLM, T5 token fitting, images) and in the node adapters, each run against the tests that
# reach it: the fast library tests and in-process copies of the ComfyUI end-to-end tests (tests/inprocess). A surviving
# mutant is a bug no test would catch. Separate from CI (it takes a long while on 2 cores).
#   bash scripts/mutation.sh                  # run everything (resumes where a previous run stopped), then the score per file
#   bash scripts/mutation.sh "thinkdiff.*"    # only these mutants (mutmut's name patterns), e.g. "nodes.text_encoding.*"
#   bash scripts/mutation.sh report           # the score of the last run only
# Survivors: `.dev/venv-mutmut/bin/mutmut results`, one shown with `.dev/venv-mutmut/bin/mutmut show NAME`.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV=${THINKDIFF_DEV_DIR:-$HERE/.dev}
VENV=$DEV/venv-mutmut
bash "$HERE/scripts/bootstrap.sh"
if [ ! -x "$VENV/bin/mutmut" ]; then
  bash "$HERE/scripts/overlay_venv.sh" "$DEV/venv" "$VENV"
  "$VENV/bin/pip" install -q "mutmut>=3.8,<4"
fi
cd "$HERE"
export THINKDIFF_DEV_DIR=$DEV THINKDIFF_INPROCESS=1  # mutmut runs the tests from a copy in mutants/
# mutmut forks a child per mutant from a process that has run torch: a parent OpenMP thread pool deadlocks such children.
# One thread each (mutmut runs one child per core).
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
[ "${1:-}" = report ] || "$VENV/bin/mutmut" run "$@" || true
exec "$VENV/bin/python" scripts/mutation_report.py
