"""Benchmark: LACP training (tspnet.lacp.train) against its network's forward+backward, and the authors' loop.

Issue #9's target: LACP training costs at most 2x its network's
forward+backward time on the same run. One short training run per size is
timed, with the configured search frequency (`locate.lacp` of params.yaml:
16 videos per step, the search every 10 steps, over every training video):
- (b) each training step (`train_step`: packed forward of the step's videos,
  pseudo background points, every loss term, backward, Adam),
- (c) each search pass (eval-mode forward over every training video, the
  sequence search, the runs the loss reads),
- whole: the run's wall time, (b) and (c) included;
and, just before each step, on the same batch:
- (a) the network's forward (training mode, dropout on) and backward alone,
  on a separate copy of the network (interleaved, so that both figures see
  the same machine load; its time is not counted in "whole").
The ratio whole / (a) is the target's figure.

Side by side, the straightforward version (tests/reference/lacp_train_loop.py,
the authors' structure): one video per forward through two Conv1d layers and
the literal per-video loss, averaged, backward, Adam; and a search pass with
one forward per video (then the same search). Timed on the run's first
`--loop-steps` batches; its whole run is estimated as steps x mean loop step
+ searches x loop search pass.

Agreement (exit 1 if it fails): on the first batch, dropout off, visible
pseudo labels from a search: every per-video loss term and the step's
gradients, project vs loop.

Data (stated; not a trained model's features): `synthetic` = the default
dataset's shape (200 videos of 40-120 s, 25 fps / 16-frame snippets, 2 x 64-d
features, 5 classes); `thumos14` = THUMOS14's shape (200 videos, lengths as
bench/common.thumos_like_lengths, 2 x 1024-d, 20 classes). Features are noise
plus a class direction inside 2-6 (3-30) instances; one point per instance at
its middle.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tests.reference.lacp_train_loop import forward_loop, video_loss_loop  # noqa: E402
from tspnet.lacp import train as lacp_train  # noqa: E402
from tspnet.lacp.config import LACPConfig  # noqa: E402
from tspnet.lacp.losses import sample_snippets  # noqa: E402
from tspnet.lacp.model import LACPNet  # noqa: E402
from tspnet.lacp.pseudo import select_seeds  # noqa: E402
from tspnet.lacp.search import search_pseudo_labels  # noqa: E402
from tspnet.params import load_params  # noqa: E402

SIZES = {
    "synthetic": dict(dim=128, classes=5, instances=(2, 6), instance_s=(2.5, 10.0), iterations=20),
    "thumos14": dict(dim=2048, classes=20, instances=(3, 30), instance_s=(1.5, 12.0), iterations=10),
}
TARGET = 2.0
LOSS_TOLERANCE, GRADIENT_TOLERANCE = 1e-4, 1e-3


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--videos", type=int, default=200, help="training videos (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="steps of the timed run (default: 20 synthetic, 10 thumos14)")
    parser.add_argument("--loop-steps", type=int, default=3, help="batches the loop version is timed on")
    parser.add_argument("--params", type=Path, default=common.REPO / "params.yaml")
    common.add_device_arguments(parser)
    return parser.parse_args(argv)


def make_training_set(size: str, videos: int, seed: int) -> lacp_train.TrainingSet:
    spec = SIZES[size]
    rng = np.random.default_rng(seed)
    if size == "synthetic":
        lengths = (rng.uniform(40, 120, videos) * common.SNIPPETS_PER_SECOND).astype(np.int64)
    else:
        lengths = common.thumos_like_lengths(rng, videos)
    classes, dim = spec["classes"], spec["dim"]
    directions = rng.normal(size=(classes, dim)).astype(np.float32)
    features, points, labels = [], [], np.zeros((videos, classes), np.float32)
    for v, length in enumerate(lengths.tolist()):
        x = rng.normal(size=(length, dim)).astype(np.float32)
        own = rng.choice(classes, size=int(rng.integers(1, 3)), replace=False)
        snippets, kinds = [], []
        for _ in range(int(rng.integers(spec["instances"][0], spec["instances"][1] + 1))):
            span = max(1, int(rng.uniform(*spec["instance_s"]) * common.SNIPPETS_PER_SECOND))
            start = int(rng.integers(0, max(1, length - span + 1)))
            c = int(rng.choice(own))
            x[start:start + span] += 2.0 * directions[c]
            snippets.append(min(length - 1, start + span // 2))
            kinds.append(c)
            labels[v, c] = 1
        features.append(x)
        points.append(lacp_train.point_matrix(np.array(snippets), np.array(kinds), length, classes))
    return lacp_train.TrainingSet([f"video_{i:04d}" for i in range(videos)], torch.from_numpy(np.concatenate(features)),
                                  np.cumsum(lengths) - lengths, lengths, points, labels)


def loop_step(model, optimizer, data, videos, visible_labels, config, rng) -> None:
    """The authors' step: one forward and loss per video, the mean, backward, Adam."""
    optimizer.zero_grad()
    losses = []
    for v in videos.tolist():
        start = int(data.offsets[v])
        labels = torch.from_numpy(data.labels[v])
        score, fused, embedding = forward_loop_train(model, data.features[start:start + int(data.lengths[v])],
                                                     labels, config.r_act)

        def samples(c, s, e):
            return sample_snippets(np.array([s]), np.array([e]), config.samples_per_run, rng)[0]

        pseudo = visible_labels[v]
        losses.append(video_loss_loop(score, fused, embedding, labels, torch.from_numpy(data.points[v]),
                                      None if pseudo is None else torch.from_numpy(pseudo), select_seeds, samples,
                                      config.loss_weights, config.temperature, config.feature_contrast,
                                      config.outer_ratio)["total"])
    torch.stack(losses).mean().backward()
    optimizer.step()


def forward_loop_train(model: LACPNet, features, labels, r_act):
    """forward_loop with the model's dropout (training mode) between the two convolutions."""
    import torch.nn.functional as F

    from tspnet.lacp.model import linear_to_conv

    hidden = F.relu(F.conv1d(features.T[None], linear_to_conv(model.embed.weight, 3), model.embed.bias, padding=1))
    probs = torch.sigmoid(F.conv1d(F.dropout(hidden, model.dropout, model.training),
                                   model.classifier.weight[:, :, None]))[0].T
    fused = torch.cat((probs[:, :-1] * (1 - probs[:, -1:]), probs[:, -1:]), dim=1)
    k = max(1, probs.shape[0] // r_act)
    top = probs[:, :-1].sort(dim=0, descending=True).values[:k].mean(dim=0)
    return top * labels + probs[:, :-1].mean(dim=0) * (1 - labels), fused, hidden[0].T


def loop_search_pass(model, data, config) -> list[np.ndarray]:
    """One forward per video (eval mode), then the search."""
    cas = []
    with torch.no_grad():
        for v in range(len(data)):
            start = int(data.offsets[v])
            _, fused, _ = forward_loop(model, data.features[start:start + int(data.lengths[v])],
                                       torch.from_numpy(data.labels[v]), config.r_act)
            cas.append(fused.numpy())
    return search_pseudo_labels(cas, data.points, lacp_train.search_config(config))


def agreement(data, config, seed) -> dict:
    """Per-video loss terms and gradients of the first batch, dropout off, project vs loop."""
    config = dataclasses.replace(config, dropout=0.0)
    torch.manual_seed(seed)
    model = LACPNet(data.features.shape[1], data.labels.shape[1], config.hidden, 0.0)
    cas, _ = lacp_train.predict(model, data.features, data.offsets, data.lengths, config.r_act, data.labels)
    pseudo = search_pseudo_labels(cas, data.points, lacp_train.search_config(config))
    runs = [lacp_train.completeness_runs(p, c, config.outer_ratio) for p, c in zip(pseudo, data.classes)]
    videos = lacp_train.VideoStream(len(data), config.videos_per_step, np.random.default_rng(seed)).next()
    batch = lacp_train.make_batch(data, videos, runs, config, torch.device("cpu"))
    drawn = sample_snippets(batch.runs.feature_first, batch.runs.feature_last, config.samples_per_run,
                            np.random.default_rng(seed))
    table = dict(zip(zip(batch.runs.feature_video.tolist(), batch.runs.feature_class.tolist(),
                         batch.runs.feature_first.tolist(), batch.runs.feature_last.tolist()), drawn))
    terms = lacp_train.loss_terms(model, batch, config, np.random.default_rng(seed))
    loss = lacp_train.total_loss(terms, config)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    reference = []
    for b, v in enumerate(videos.tolist()):
        start = int(data.offsets[v])
        labels = torch.from_numpy(data.labels[v])
        score, fused, embedding = forward_loop(model, data.features[start:start + int(data.lengths[v])], labels,
                                               config.r_act)
        reference.append(video_loss_loop(
            score, fused, embedding, labels, torch.from_numpy(data.points[v]), torch.from_numpy(pseudo[v]),
            select_seeds, lambda c, s, e, b=b: table.get((b, c, s, e), np.array([s, s, e])),  # others: overwritten
            config.loss_weights, config.temperature, config.feature_contrast, config.outer_ratio))
    term_diff = max(common.elementwise_relative_difference(terms[name] + 1e-12,
                                                           torch.stack([r[name] for r in reference]) + 1e-12)
                    for name in terms)
    total = torch.stack([r["total"] for r in reference]).mean()
    expected = torch.autograd.grad(total, list(model.parameters()))
    flat = torch.cat([g.flatten() for g in grads]).double()
    flat_expected = torch.cat([g.flatten() for g in expected]).double()
    return {"loss_terms_max_rel_diff": term_diff,
            "gradient_normwise_rel_diff": float((flat - flat_expected).norm() / flat_expected.norm()),
            "runs_in_batch": int(len(batch.runs.score_video))}


def timed_run(data, config, seed, bf16) -> dict:
    """One training run with each step and search pass timed (the library's own functions, wrapped).

    Before each step, (a) runs on the same batch: a separate copy of the
    network, forward (training mode) and backward alone. Interleaving keeps
    both figures under the same machine load; (a)'s time is taken out of the
    run's wall time.
    """
    torch.manual_seed(seed)
    network = LACPNet(data.features.shape[1], data.labels.shape[1], config.hidden, config.dropout).train()
    steps, searches, forward_backward, search_forwards = [], [], [], []
    original_step, original_search, original_predict = lacp_train.train_step, lacp_train.search_pass, lacp_train.predict

    def step(model, optimizer, batch, *args, **kwargs):
        start = time.perf_counter()
        embedding, probs = network(batch.features, batch.packing)
        (probs.sum() + embedding.sum()).backward()
        network.zero_grad(set_to_none=True)
        middle = time.perf_counter()
        result = original_step(model, optimizer, batch, *args, **kwargs)
        forward_backward.append(middle - start)
        steps.append(time.perf_counter() - middle)
        return result

    def search(*args, **kwargs):
        start = time.perf_counter()
        result = original_search(*args, **kwargs)
        searches.append(time.perf_counter() - start)
        return result

    def predict(*args, **kwargs):  # the search pass's eval-mode forward
        start = time.perf_counter()
        result = original_predict(*args, **kwargs)
        search_forwards.append(time.perf_counter() - start)
        return result

    lacp_train.train_step, lacp_train.search_pass, lacp_train.predict = step, search, predict
    try:
        start = time.perf_counter()
        lacp_train.train_lacp(data, config, seed, bf16=bf16, show_progress=False)
        whole = time.perf_counter() - start - sum(forward_backward)
    finally:
        lacp_train.train_step, lacp_train.search_pass, lacp_train.predict = (original_step, original_search,
                                                                             original_predict)
    return {"whole_s": whole, "steps_s": steps, "searches_s": searches, "search_forwards_s": search_forwards,
            "network_s": forward_backward}


def run_size(size: str, args, bf16: bool) -> dict:
    spec = SIZES[size]
    params = load_params(args.params)["locate"]["lacp"]
    iterations = args.iterations or spec["iterations"]
    config = dataclasses.replace(LACPConfig.from_params(params), iterations=iterations)
    data = make_training_set(size, args.videos, args.seed)
    check = agreement(data, config, args.seed)
    run = timed_run(data, config, args.seed, bf16)
    network = run["network_s"]
    # The run's batches, for the loop version: the same stream, seeded as train_lacp seeds it.
    order_rng, _ = np.random.default_rng(args.seed).spawn(2)
    stream = lacp_train.VideoStream(len(data), config.videos_per_step, order_rng)
    batches = [stream.next() for _ in range(iterations)]

    torch.manual_seed(args.seed)
    model = LACPNet(data.features.shape[1], data.labels.shape[1], config.hidden, config.dropout).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay)
    rng = np.random.default_rng(args.seed)
    loop_steps = []
    for videos in batches[:args.loop_steps]:
        start = time.perf_counter()
        loop_step(model, optimizer, data, videos, [None] * len(data), config, rng)
        loop_steps.append(time.perf_counter() - start)
    start = time.perf_counter()
    loop_search_pass(model.eval(), data, config)
    loop_search = time.perf_counter() - start

    searches = len(run["searches_s"])
    network_s = float(np.sum(network))
    loop_whole = iterations * float(np.mean(loop_steps)) + searches * loop_search
    result = {
        "size": size, "videos": len(data), "snippets": int(data.lengths.sum()), "feature_dim": spec["dim"],
        "classes": spec["classes"], "iterations": iterations, "videos_per_step": config.videos_per_step,
        "search_every": config.search_every, "searches": searches, "hidden": config.hidden,
        "agreement": check,
        "a_network_forward_backward_s": network_s, "a_per_step_s": network,
        "b_training_steps_s": float(np.sum(run["steps_s"])), "b_per_step_s": run["steps_s"],
        "c_search_passes_s": float(np.sum(run["searches_s"])), "c_per_pass_s": run["searches_s"],
        "c_of_which_forward_s": float(np.sum(run["search_forwards_s"])),
        "whole_s": run["whole_s"], "whole_over_network": run["whole_s"] / network_s,
        "loop_step_mean_s": float(np.mean(loop_steps)), "loop_steps_s": loop_steps, "loop_search_pass_s": loop_search,
        "loop_whole_estimate_s": loop_whole, "loop_over_project": loop_whole / run["whole_s"],
    }
    return result


def agrees(result: dict) -> bool:
    a = result["agreement"]
    return a["loss_terms_max_rel_diff"] <= LOSS_TOLERANCE and a["gradient_normwise_rel_diff"] <= GRADIENT_TOLERANCE


def print_result(r: dict) -> None:
    a = r["agreement"]
    print(f"\n{r['size']}: {r['videos']} videos, {r['snippets']} snippets, D = {r['feature_dim']}, "
          f"{r['classes']} classes, hidden {r['hidden']}; {r['iterations']} steps of {r['videos_per_step']} videos, "
          f"search every {r['search_every']} ({r['searches']} passes)")
    print(f"agreement (first batch, dropout off, {a['runs_in_batch']} pseudo-label runs): loss terms "
          f"{a['loss_terms_max_rel_diff']:.1e} (tolerance {LOSS_TOLERANCE:g}), gradients "
          f"{a['gradient_normwise_rel_diff']:.1e} norm-wise (tolerance {GRADIENT_TOLERANCE:g}) -> "
          f"{'AGREE' if agrees(r) else 'DIFFER'}")
    per = r["iterations"]
    rows = [
        ("(a) network forward+backward", r["a_network_forward_backward_s"], r["a_network_forward_backward_s"] / per),
        ("(b) training steps", r["b_training_steps_s"], r["b_training_steps_s"] / per),
        ("(c) search passes", r["c_search_passes_s"], r["c_search_passes_s"] / max(1, r["searches"])),
        ("    of which the eval-mode forward", r["c_of_which_forward_s"],
         r["c_of_which_forward_s"] / max(1, r["searches"])),
        ("whole run (b + c + bookkeeping)", r["whole_s"], r["whole_s"] / per),
        ("loop version, estimated whole run", r["loop_whole_estimate_s"], r["loop_step_mean_s"]),
    ]
    print(f"{'':<36}{'total s':>10}{'per step / pass':>17}")
    for name, total, each in rows:
        print(f"{name:<36}{total:>10.2f}{each:>17.3f}")
    print(f"loop: {r['loop_step_mean_s']:.3f} s per step (mean of {len(r['loop_steps_s'])}), "
          f"{r['loop_search_pass_s']:.2f} s per search pass")
    met = r["whole_over_network"] <= TARGET
    print(f"whole / (a): {r['whole_over_network']:.2f} (target <= {TARGET:g}: {'met' if met else 'NOT MET'}); "
          f"loop / project: {r['loop_over_project']:.2f}x")


def main(argv=None) -> int:
    args = parse_args(argv)
    device, bf16 = common.setup(args)
    if device.type != "cpu":
        print("bench_lacp_train runs on the CPU only (the pipeline's LACP training is device-agnostic)")
        return 0
    results = {"benchmark": "lacp_train", "machine": common.machine(device), "sizes": []}
    print(f"LACP training on {device} ({results['machine']['cpu']}, {torch.get_num_threads()} threads)")
    ok = True
    for size in args.sizes:
        result = run_size(size, args, bf16)
        print_result(result)
        results["sizes"].append(result)
        ok &= agrees(result)
    return common.finish("lacp_train", results, args.out, ok, "the packed training differs from the per-video loop")


if __name__ == "__main__":
    sys.exit(main())
