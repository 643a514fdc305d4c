"""Command line: `python -m tspnet <command> ...`, one function per sub-command.

Each sub-command registers its arguments in an `add_<command>_parser`
function and runs in a `run_<command>` function; library imports happen
inside the runner so that one command's dependencies never slow another.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from tspnet.files import DataError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except DataError as exc:
        print(f"tspnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        from tspnet.console import disk_full_message
        from tspnet.files import is_disk_full

        if not is_disk_full(exc):
            raise
        print(f"tspnet {args.command}: error: {disk_full_message(exc)}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tspnet", description="TSPNet pipeline commands.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_evaluate_parser(subparsers)
    add_summarize_parser(subparsers)
    add_headline_parser(subparsers)
    return parser


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


# ----------------------------------------------------------------------------- evaluate


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="mAP of ActivityNet-format detections against ground truth",
        description="mAP (%) at each tIoU threshold, and the averages over 0.1:0.5, 0.3:0.7 and 0.1:0.7, "
        "with the official ActivityNet matching, in seconds.",
    )
    parser.add_argument("--ground-truth", required=True, help="ActivityNet ground truth JSON ('database')")
    parser.add_argument("--predictions", required=True, help="ActivityNet results JSON ('results'), seconds")
    parser.add_argument("--subset", default="test", help="ground-truth subset to evaluate (default: %(default)s)")
    parser.add_argument(
        "--ambiguous",
        help="file of 'video start end' lines (seconds): drop predictions that share a snippet with one",
    )
    parser.add_argument("--out", help="write the flat summary (map@t and averages) to this JSON file")
    parser.add_argument("--feature-fps", type=_positive_float, default=25.0,
                        help="feature frame rate, for the ambiguous filter (default: %(default)s)")
    parser.add_argument("--snippet-frames", type=_positive_int, default=16,
                        help="frames per snippet, for the ambiguous filter (default: %(default)s)")
    parser.add_argument("--tiou-thresholds", type=float, nargs="+", default=None,
                        metavar="T", help="tIoU thresholds in (0, 1] (default: 0.1 ... 0.7)")
    parser.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from tspnet.evaluate import (
        DEFAULT_TIOU_THRESHOLDS, evaluate_detections, format_table, load_ground_truth, load_results,
    )
    from tspnet.files import write_json

    ground_truth = load_ground_truth(args.ground_truth, args.subset)
    if ground_truth.instances.empty:
        raise DataError(f"{args.ground_truth}: subset {args.subset!r} has no annotated instance")
    predictions = load_results(args.predictions)
    if args.ambiguous:
        predictions = _drop_ambiguous(predictions, args.ambiguous, args.feature_fps, args.snippet_frames)
    try:
        evaluation = evaluate_detections(
            ground_truth, predictions, args.tiou_thresholds or DEFAULT_TIOU_THRESHOLDS
        )
    except ValueError as exc:  # bad thresholds: an argument error, not a traceback
        print(f"tspnet evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(evaluation, f"{args.predictions} against {args.ground_truth} (subset {args.subset})"))
    if args.out:
        write_json(args.out, evaluation.summary())
    return 0


def _drop_ambiguous(predictions, path: str, feature_fps: float, snippet_frames: int):
    """Predictions minus those overlapping an ambiguous segment (METHOD.md, inference step 6)."""
    from tspnet.postprocess import drop_ambiguous_mask, read_ambiguous
    from tspnet.units import round_proposal_snippets, seconds_to_snippets, snippets_per_second

    ambiguous = read_ambiguous(path)
    # In snippets, rounded as the pipeline's proposal import rounds them.
    segments = round_proposal_snippets(
        seconds_to_snippets(predictions[["start", "end"]].to_numpy(), feature_fps, snippet_frames)
    )
    drop = drop_ambiguous_mask(
        predictions["video"].to_numpy(dtype=str),
        segments[:, 0],
        segments[:, 1],
        ambiguous,
        snippets_per_second(feature_fps, snippet_frames),
    )
    print(f"dropped {int(drop.sum())} of {len(predictions)} predictions overlapping an ambiguous segment ({path})")
    return predictions.loc[~drop].reset_index(drop=True)


# ----------------------------------------------------------------------------- summarize


def add_summarize_parser(subparsers: argparse._SubParsersAction) -> None:
    from tspnet.summary import DEFAULT_METRICS

    parser = subparsers.add_parser(
        "summarize",
        help="mean ± std of metrics over DVC experiments, one table per group of like runs",
        description="Mean, sample standard deviation, min and max of each metric over the DVC experiments "
        "of this repository's HEAD (all, or those named), one table per group: experiments are grouped by "
        "every param whose value differs between them, the seed aside (or by --group-by). Failed, queued "
        "and running experiments are left out, and so is a run from the rows of a metric family it "
        "recorded as not computed; each is counted with its reason. Run it from the repository root.",
    )
    parser.add_argument("experiments", nargs="*", help="experiment names or revisions (default: all)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), metavar="PATTERN",
                        help="metric names or glob patterns (default: %(default)s)")
    parser.add_argument("--group-by", nargs="+", metavar="PARAM",
                        help="group by these params only (default: every param that differs, the seed aside)")
    parser.add_argument("--where", action="append", default=[], metavar="PARAM=VALUE",
                        help="only experiments whose param has this value, e.g. dataset=synthetic (repeatable)")
    parser.add_argument("--json", dest="json_path", help="also write the summary here as JSON")
    parser.set_defaults(run=run_summarize)


def run_summarize(args: argparse.Namespace) -> int:
    from tspnet.files import write_json
    from tspnet.summary import exp_show, format_summary, git_metrics, runs_from_exp_show, summarize

    try:
        runs = runs_from_exp_show(exp_show(), git_metrics, args.experiments)
        summary = summarize(runs, args.metrics, args.group_by, args.where)
    except (KeyError, ValueError, RuntimeError) as exc:
        print(f"tspnet summarize: error: {exc.args[0]}", file=sys.stderr)
        return 2
    if not runs:
        print("tspnet summarize: error: no experiments found (run `dvc exp run` first)", file=sys.stderr)
        return 2
    print(format_summary(summary))
    if args.json_path:
        write_json(args.json_path, summary)
    return 0


# ----------------------------------------------------------------------------- headline


def add_headline_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "headline",
        help="the run's headline table: base locator, TSPNet and gain at every tIoU; Spearman",
        description="Print the headline of the run in the workspace from its metrics files (what `make repro` "
        "ends with). Refuses metrics files that come from different runs.",
    )
    parser.add_argument("--metrics-dir", default="metrics", help="the run's metrics files (default: %(default)s)")
    parser.set_defaults(run=run_headline)


def run_headline(args: argparse.Namespace) -> int:
    from tspnet.headline import format_headline, read_run
    from tspnet.records import MixedRuns

    try:
        run = read_run(args.metrics_dir)
    except MixedRuns as exc:
        raise DataError(f"{args.metrics_dir}: the files come from different runs: {exc}. Rerun the pipeline "
                        "(`dvc repro`) or check out one run's files (`git checkout -- metrics`)") from exc
    if not any(key.startswith("base.") for key in run):
        raise DataError(f"{args.metrics_dir}: no base.* metrics (run the pipeline first: `dvc repro`)")
    print(format_headline(run))
    return 0
