"""Eval-gated promotion as a Ray job: ``python jobs/promote.py --config RECIPE [--candidate VERSION]``."""

import argparse

from _entry import recipe_from_args

from l2ray.eval.api import promote

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--candidate", default="candidate", help="version number or alias")
recipe, args = recipe_from_args(parser)
decision = promote(recipe, candidate=args.candidate)
print(f"{decision.outcome}: version {decision.candidate}")
for reason in decision.reasons:
    print(f"  - {reason}")
