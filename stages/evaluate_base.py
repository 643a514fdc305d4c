"""Stage `evaluate_base`: the base locator's own test proposals, soft-NMS and filtering as for TSPNet, evaluated.

Needs no features and no training, so locators can be compared from their
proposal files alone. Writes the `base.*` metrics.
"""

from tspnet.console import reported_errors
from tspnet.params import stage_arguments
from tspnet.pipeline import run_evaluate_base
from tspnet.records import run_identity

if __name__ == "__main__":
    args, params = stage_arguments(__doc__, {"dataset": "data/dataset", "proposals": "data/proposals",
                                             "out": "data/base_detections", "metrics": "metrics/base.json"},
                                   ("infer.nms_sigma", "dataset", "proposals.locator", "locate.method", "base.seed"))
    with reported_errors():
        run_evaluate_base(params["infer"], args.dataset, args.proposals, args.out, args.metrics,
                          run_identity(params))
