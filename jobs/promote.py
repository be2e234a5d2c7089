"""Eval-gated promotion as a Ray job:
``python jobs/promote.py --config RECIPE [--candidate VERSION | --rollback]``."""

import argparse

from _entry import recipe_from_args

from l2ray.eval.api import promote, rollback

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--candidate", default="candidate", help="version number or alias")
parser.add_argument("--rollback", action="store_true", help="champion back to the version it replaced")
recipe, args = recipe_from_args(parser)
decision = rollback(recipe) if args.rollback else promote(recipe, candidate=args.candidate)
print(f"{decision.outcome}: version {decision.candidate}")
for reason in decision.reasons:
    print(f"  - {reason}")
