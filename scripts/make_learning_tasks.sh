#!/usr/bin/env bash
# Generated tasks of the local bug kinds only (issue 24's benchmark data), one folder per package, with
# short template statements (the file, the function, the failing tests, the first line the bug
# changed) for a 135M model's prompts, under runs/factory-$STATEMENTS.
# SPECS="toolz==1.0.0 parse==1.20.2" makes (or goes on making) only those packages;
# STATEMENTS=template leaves the line out (the first five runs of docs/method.md); OUT=runs/NAME
# makes them elsewhere.
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=2
STATEMENTS=${STATEMENTS:-template-line}
OUT=${OUT:-runs/factory-$STATEMENTS}
MODS=func_pm_op_change,func_pm_op_swap,func_pm_op_change_const,func_pm_ctrl_invert_if,func_pm_op_break_chains
for spec in ${SPECS:-toolz==1.0.0 more-itertools==10.5.0 tabulate==0.9.0 parse==1.20.2}; do
  name=${spec%%==*}
  start=$(date +%s)
  .venv/bin/python -m environments make-tasks pypi:$spec --out $OUT/$name --max-tasks 80 \
    --workers 2 --modifiers $MODS --statements $STATEMENTS --json > $OUT-$name.json 2> $OUT-$name.log
  echo "$name rc $? wall $(( $(date +%s) - start )) s"
done
