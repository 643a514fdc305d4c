"""Stage `locate`: train the base locator `locate.method` names (builtin or LACP) and write its raw proposals.

Reads params groups `base` and `locate` (`locate.method`, `locate.checkpoint`
and the chosen method's group). Writes both splits' proposals (ActivityNet
results JSON, seconds, no NMS) and, for LACP, its test detections after its own
NMS (evaluated by stage `evaluate_lacp`). When
`proposals.locator` names another locator, nothing is trained.
"""

from tspnet.console import reported_errors
from tspnet.params import stage_arguments
from tspnet.pipeline import run_locate

if __name__ == "__main__":
    args, params = stage_arguments(__doc__, {"dataset": "data/dataset", "out": "data/locator"},
                                   ("base", "locate.method", "locate.checkpoint", "locate.${locate.method}",
                                    "proposals.locator"))
    with reported_errors():
        run_locate(params["base"], params["locate"], params["proposals"]["locator"], args.dataset, args.out)
