"""Evaluation as a Ray job: ``python jobs/eval.py --config RECIPE [--model URI] [--label NAME]``."""

import argparse

from _entry import recipe_from_args

from l2ray.eval.api import run_eval

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--model", help="model URI (default: the recipe's eval.model or student.model)")
parser.add_argument("--label", help="report folder name under <run_dir>/eval/")
recipe, args = recipe_from_args(parser)
result = run_eval(recipe, label=args.label, model=args.model)
print(f"report in {result.out_dir}")
