"""Stage `labels`: point labels and center labels of the training proposals.

Reads params group `labels`; writes the labels and the action / background /
multi-point proposal counts as metrics.
"""

from tspnet.console import reported_errors
from tspnet.params import stage_arguments
from tspnet.pipeline import run_labels
from tspnet.records import run_identity

if __name__ == "__main__":
    args, params = stage_arguments(__doc__, {"dataset": "data/dataset", "proposals": "data/proposals",
                                             "out": "data/labels", "metrics": "metrics/labels.json"},
                                   ("labels", "dataset", "proposals.locator", "locate.method", "base.seed"))
    with reported_errors():
        run_labels(params["labels"], args.dataset, args.proposals, args.out, args.metrics, run_identity(params))
