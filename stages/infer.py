"""Stage `infer`: TSPNet detections on the test split (aligned confidence, ABA, soft-NMS, filtering).

Reads params groups `base` and `infer` (and the RoI settings of `train`);
writes ActivityNet results JSON in seconds; without a model or features, a "not computed" record.
"""

from tspnet.console import reported_errors
from tspnet.params import stage_arguments
from tspnet.pipeline import run_infer
from tspnet.records import run_identity

if __name__ == "__main__":
    args, params = stage_arguments(__doc__, {
        "dataset": "data/dataset", "proposals": "data/proposals", "model": "data/model",
        "out": "data/detections", "metrics": "metrics/infer.json"},
        ("base", "infer", "train.roi_bins", "train.widen_ratio", "dataset", "proposals.locator", "locate.method"))
    with reported_errors():
        run_infer(params["base"], params["infer"], params["train"], args.dataset, args.proposals, args.model,
                  args.out, args.metrics, run_identity(params))
