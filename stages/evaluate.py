"""Stage `evaluate`: TSPNet's test mAP, its gain over the base locator, the plots and the headline.

Writes the `tspnet.*`, `gain.*` and `alignment.*` metrics, mAP vs tIoU and per-class AP
(CSV for `dvc plots`, PNG for reading offline), and metrics/headline.json, the
run's DVC metrics (with LACP's own average when LACP ran). Without TSPNet detections
(no features), base numbers only.
"""

from tspnet.console import reported_errors
from tspnet.params import stage_arguments
from tspnet.pipeline import run_evaluate
from tspnet.records import run_identity

if __name__ == "__main__":
    args, params = stage_arguments(__doc__, {"dataset": "data/dataset", "detections": "data/detections",
                                             "base": "data/base_detections", "metrics": "metrics/tspnet.json",
                                             "plots": "plots", "headline": "metrics/headline.json",
                                             "lacp": "metrics/lacp.json"},
                                   ("dataset", "proposals.locator", "locate.method", "base.seed"))
    with reported_errors():
        run_evaluate(args.dataset, args.detections, args.base, args.metrics, args.plots, args.headline,
                     run_identity(params), args.lacp)
