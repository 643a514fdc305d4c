"""Stage `train`: train TSPNet on the training proposals (CSL, saliency point updating).

Reads params groups `base`, `labels` and `train`; writes the model, the
moved points, per-step losses (dvclive, and a PNG), the center labels before
and after saliency point updating, and the final losses as metrics. Without
features, every output says "not computed" instead.
"""

from tspnet.console import reported_errors
from tspnet.params import stage_arguments
from tspnet.pipeline import run_train
from tspnet.records import run_identity

if __name__ == "__main__":
    args, params = stage_arguments(__doc__, {
        "dataset": "data/dataset", "proposals": "data/proposals", "labels": "data/labels",
        "out": "data/model", "metrics": "metrics/train.json", "live": "plots/train", "plots": "plots"},
        ("base", "labels", "train", "dataset", "proposals.locator", "locate.method"))
    with reported_errors():
        run_train(params["base"], params["train"], params["labels"], args.dataset, args.proposals, args.labels,
                  args.out, args.metrics, args.live, args.plots, run_identity(params))
