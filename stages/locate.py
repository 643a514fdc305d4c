"""Stage `locate`: train the built-in base locator and write its proposals (no NMS).

Reads params groups `base` and `locate`. When `proposals.locator` names
another locator, nothing is trained and only a note is written.
"""

from tspnet.console import reported_errors
from tspnet.params import stage_arguments
from tspnet.pipeline import run_locate

if __name__ == "__main__":
    args, params = stage_arguments(__doc__, {"dataset": "data/dataset", "out": "data/locator"},
                                   ("base", "locate", "proposals.locator"))
    with reported_errors():
        run_locate(params["base"], params["locate"], params["proposals"]["locator"], args.dataset, args.out)
