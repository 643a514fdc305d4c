"""Stage `proposals`: import the chosen base locator's proposals, validate, convert to snippets.

Reads params group `proposals` and, for an external locator, its `locators` registry entry
(sources fetched like a dataset's); writes one .npz per split and the import counts as metrics.
"""

from tspnet.console import reported_errors
from tspnet.params import stage_arguments
from tspnet.pipeline import run_proposals
from tspnet.records import run_identity

if __name__ == "__main__":
    args, params = stage_arguments(__doc__, {"dataset": "data/dataset", "locator": "data/locator",
                                             "out": "data/proposals", "metrics": "metrics/proposals.json"},
                                   ("proposals", "locators.${proposals.locator}", "archives", "dataset",
                                    "locate.method", "base.seed"))
    with reported_errors():
        run_proposals(params["proposals"], args.dataset, args.locator, args.out, args.metrics,
                      locators=params["locators"], archives=params["archives"], identity=run_identity(params))
