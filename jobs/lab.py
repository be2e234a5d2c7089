"""The L² lab as a Ray job: ``python jobs/lab.py --config configs/lab.yaml [--set k=[6]]``."""

import argparse

import _entry  # noqa: F401  (puts the repo on sys.path)
import ray

from l2ray.lab.study import load_lab_config, run_study

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--config", default="configs/lab.yaml", help="lab YAML, relative to the working dir")
parser.add_argument("--set", action="append", default=[], help="override, e.g. train_seeds=[0]")
args = parser.parse_args()
lab = load_lab_config(args.config, args.set)
ray.init()  # the job's cluster
summary = run_study(lab)
print(f"lab report in {summary['report']}")
