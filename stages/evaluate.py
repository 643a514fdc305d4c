"""Stage `evaluate`: TSPNet's test mAP, its gain over the base locator, and the plots.

Writes the `tspnet.*` and `gain.*` metrics, mAP vs tIoU and per-class AP
(CSV for `dvc plots`, PNG for reading offline).
"""

from tspnet.console import reported_errors
from tspnet.params import stage_arguments
from tspnet.pipeline import run_evaluate

if __name__ == "__main__":
    args, params = stage_arguments(__doc__, {"dataset": "data/dataset", "detections": "data/detections",
                                             "base": "data/base_detections", "metrics": "metrics/tspnet.json",
                                             "plots": "plots"}, ())
    with reported_errors():
        run_evaluate(args.dataset, args.detections, args.base, args.metrics, args.plots)
