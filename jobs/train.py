"""Fine-tuning as a Ray job: ``python jobs/train.py --config RECIPE [--resume]``."""

import argparse

from _entry import recipe_from_args

from l2ray.train.api import train

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--resume", action="store_true", help="continue the last run of this recipe")
recipe, args = recipe_from_args(parser)
result = train(recipe, resume=args.resume)
print(f"registered {result.model_uri} (alias {result.alias}); final loss {result.final_loss:.4f}")
