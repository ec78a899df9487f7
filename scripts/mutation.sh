#!/usr/bin/env bash
# Mutation testing with mutmut 3: deliberate small bugs in every module of thinkdiff/, nodes/, training/ and evaluation/,
# each run against the tests that reach it (pyproject.toml's [tool.mutmut]): the in-process tests and in-process copies
# of the ComfyUI end-to-end tests (tests/inprocess). The vLLM-only module, training/vllm_stage_a.py, runs apart in
# .dev/venv-vllm (scripts/mutmut-vllm.cfg). A surviving mutant is a bug no test would catch. Separate from CI (hours).
#   bash scripts/mutation.sh                  # run everything (resumes where a previous run stopped), then the scores
#   bash scripts/mutation.sh "thinkdiff.*"    # only these mutants (mutmut's name patterns), e.g. "nodes.text_encoding.*"
#   bash scripts/mutation.sh vllm [PATTERN]   # training/vllm_stage_a.py in .dev/venv-vllm, from a copy in .dev/mutation-vllm
#   bash scripts/mutation.sh report           # the scores per module of every run so far, narrowed ones included (a
#                                             # module's newest results; scripts/mutation_report.py)
#   bash scripts/mutation.sh narrow "thinkdiff/sampling.py ..." "tests/test_sampling.py ..." [MUTMUT RUN OPTIONS]
#                                             # only those modules against only those tests (minutes, not hours), from a
#                                             # copy in .dev/mutation-narrow (or $MUTATION_COPY, for runs side by side,
#                                             # e.g. with --max-children 1); a survivor there may die in the whole run
# Survivors: `.dev/venv-mutmut/bin/mutmut results`, one shown with `.dev/venv-mutmut/bin/mutmut show NAME` (for the vLLM
# run: the same from .dev/mutation-vllm with .dev/venv-mutmut-vllm). Judged equivalent: docs/development.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV=${THINKDIFF_DEV_DIR:-$HERE/.dev}
export THINKDIFF_DEV_DIR=$DEV THINKDIFF_INPROCESS=1  # mutmut runs the tests from a copy in mutants/
# pytest keeps only its last three sessions' temporary folders: a run of a pytest session per mutant would delete those of
# a test run beside it. Its own root keeps them apart.
export PYTEST_DEBUG_TEMPROOT=$DEV/mutation-tmp
mkdir -p "$PYTEST_DEBUG_TEMPROOT"
# mutmut forks a child per mutant from a process that has run torch: a parent OpenMP thread pool deadlocks such children.
# One thread each (mutmut runs one child per core).
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

copy_repository() {  # copy_repository DIR: the tracked files; -u: unchanged files keep their age, so mutmut resumes
  mkdir -p "$1"
  (cd "$HERE" && git ls-files -z | xargs -0 cp -u --parents -t "$1")
}

mutmut_in() {  # mutmut_in BASE_VENV MUTMUT_VENV: an overlay of BASE with mutmut
  if [ ! -x "$2/bin/mutmut" ]; then
    bash "$HERE/scripts/overlay_venv.sh" "$1" "$2"
    "$2/bin/pip" install -q "mutmut>=3.8,<4"
  fi
}

case "${1:-}" in
  report) ;;
  vllm)
    shift
    bash "$HERE/scripts/bootstrap_vllm.sh"
    mutmut_in "$DEV/venv-vllm" "$DEV/venv-mutmut-vllm"
    COPY=$DEV/mutation-vllm
    copy_repository "$COPY"
    "$DEV/venv-vllm/bin/python" -c 'import sys; p = sys.argv[1]; s = open(p).read(); open(p, "w").write(s.split("[tool.mutmut]")[0])' \
        "$COPY/pyproject.toml"
    cp "$HERE/scripts/mutmut-vllm.cfg" "$COPY/setup.cfg"
    (cd "$COPY" && "$DEV/venv-mutmut-vllm/bin/mutmut" run "$@") || true
    ;;
  narrow)
    bash "$HERE/scripts/bootstrap.sh"
    mutmut_in "$DEV/venv" "$DEV/venv-mutmut"
    COPY=${MUTATION_COPY:-$DEV/mutation-narrow}
    export PYTEST_DEBUG_TEMPROOT=$COPY-tmp
    mkdir -p "$PYTEST_DEBUG_TEMPROOT"
    copy_repository "$COPY"
    cp "$HERE/pyproject.toml" "$COPY/pyproject.toml"
    "$DEV/venv/bin/python" -c 'import re, sys
path, modules, tests = sys.argv[1:]
listed = lambda words: "[" + ", ".join(f"\"{word}\"" for word in words.split()) + "]"
text = re.sub(r"pytest_add_cli_args_test_selection = \[.*?\]\n", f"only_mutate = {listed(modules)}\n"
              f"pytest_add_cli_args_test_selection = {listed(tests)}\n", open(path).read(), flags=re.S)
open(path, "w").write(text)' "$COPY/pyproject.toml" "$2" "$3"
    shift 3
    (cd "$COPY" && "$DEV/venv-mutmut/bin/mutmut" run "$@") || true
    exec "$DEV/venv-mutmut/bin/python" "$HERE/scripts/mutation_report.py" "$COPY/mutants"
    ;;
  *)
    bash "$HERE/scripts/bootstrap.sh"
    mutmut_in "$DEV/venv" "$DEV/venv-mutmut"
    (cd "$HERE" && "$DEV/venv-mutmut/bin/mutmut" run "$@") || true
    ;;
esac
mutmut_in "$DEV/venv" "$DEV/venv-mutmut"
# The whole run, the vLLM run and every narrowed copy's, oldest first: a module's newest results count.
mapfile -t RUNS < <(ls -dtr "$HERE/mutants" "$DEV"/mutation-*/mutants 2>/dev/null)
exec "$DEV/venv-mutmut/bin/python" "$HERE/scripts/mutation_report.py" "${RUNS[@]}"
