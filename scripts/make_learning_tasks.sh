#!/usr/bin/env bash
# Generated tasks of the local bug kinds only (issue 24's benchmark data), one folder per package, with
# short template statements (the file, the function, the failing tests) for a 135M model's prompts.
# SPECS="toolz==1.0.0 parse==1.20.2" makes (or goes on making) only those packages.
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=2
MODS=func_pm_op_change,func_pm_op_swap,func_pm_op_change_const,func_pm_ctrl_invert_if,func_pm_op_break_chains
for spec in ${SPECS:-toolz==1.0.0 cachetools==5.5.0 more-itertools==10.5.0 tabulate==0.9.0 parse==1.20.2}; do
  name=${spec%%==*}
  start=$(date +%s)
  .venv/bin/python -m environments make-tasks pypi:$spec --out runs/factory-template/$name --max-tasks 80 \
    --workers 2 --modifiers $MODS --statements template --json \
    > runs/factory-template-$name.json 2> runs/factory-template-$name.log
  echo "$name rc $? wall $(( $(date +%s) - start )) s"
done
