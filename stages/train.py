"""Stage `train`: train TSPNet on the training proposals (CSL, saliency point updating).

Reads params groups `base`, `labels` and `train`; writes the model, the
moved points, per-step losses (dvclive) and the final losses as metrics.
"""

from tspnet.params import stage_arguments
from tspnet.pipeline import run_train

if __name__ == "__main__":
    args, params = stage_arguments(__doc__, {
        "dataset": "data/dataset", "proposals": "data/proposals", "labels": "data/labels",
        "out": "data/model", "metrics": "metrics/train.json", "live": "plots/train"})
    run_train(params["base"], params["train"], params["labels"], args.dataset, args.proposals, args.labels,
              args.out, args.metrics, args.live)
