"""Stage `evaluate_lacp`: LACP's own mAP, as its authors report it (its NMS, the test split).

Reads the `locate` stage's output: LACP's test detections after its NMS, and its
counts and losses. When LACP did not run (`locate.method: builtin`, or another
locator's proposals), writes the record that says why instead of any number.
"""

from tspnet.console import reported_errors
from tspnet.params import stage_arguments
from tspnet.pipeline import run_evaluate_lacp
from tspnet.records import run_identity

if __name__ == "__main__":
    args, params = stage_arguments(__doc__, {"dataset": "data/dataset", "locator": "data/locator",
                                             "metrics": "metrics/lacp.json"},
                                   ("dataset", "proposals.locator", "locate.method", "base.seed"))
    with reported_errors():
        run_evaluate_lacp(args.dataset, args.locator, args.metrics, run_identity(params))
