"""The whole L² pipeline as a Ray job.

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env runtime_env.yaml \
        -- python jobs/pipeline.py --config configs/demo.yaml
"""

import argparse

from _entry import recipe_from_args

from l2ray.pipeline import STAGES, run_pipeline

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--until", choices=STAGES, help="stop after this stage")
parser.add_argument("--force", action="store_true", help="rerun stages even when their records match")
recipe, args = recipe_from_args(parser)
result = run_pipeline(recipe, until=args.until, force=args.force)
print(f"pipeline finished: {[s.name for s in result.stages]}; see {result.run_dir / 'README.md'}")
