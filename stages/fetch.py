"""Stage `fetch`: materialise the dataset that `dataset:` selects in params.yaml.

Writes the dataset directory (LACP layout: features, gt.json, point labels,
fps table, ambiguous segments, and the dataset.json manifest).
"""

from tspnet.console import reported_errors
from tspnet.params import stage_arguments
from tspnet.pipeline import run_fetch

if __name__ == "__main__":
    args, params = stage_arguments(__doc__, {"out": "data/dataset"},
                                   ("dataset", "datasets.${dataset}", "archives"))
    with reported_errors():
        run_fetch(params, args.out)
