"""tspnet.precision: the bf16 switch on the CPU, what it computes in bfloat16, and what stays float32."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

import tspnet.precision as precision
import tspnet.train as train
from tspnet.console import reported_errors
from tspnet.files import DataError
from tspnet.labels import assign_labels
from tspnet.model import TSPNet
from tspnet.params import setup_torch, uses_bf16
from tspnet.proposals import Proposals

CPU = torch.device("cpu")
DIM, CLASSES = 16, 3


@pytest.fixture
def no_bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU like most laptops': AVX2, no AVX512_BF16, no AMX."""
    monkeypatch.setattr(precision, "cpu_capabilities", lambda: {"architecture": "x86_64", "avx2": True,
                                                                "avx512_bf16": False, "amx_bf16": False})


@pytest.fixture
def bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU with AVX512_BF16 (autocast works anywhere; torch emulates bfloat16 where the CPU lacks it)."""
    monkeypatch.setattr(precision, "cpu_capabilities", lambda: {"architecture": "x86_64", "avx512_bf16": True})


@pytest.mark.parametrize("capabilities, native", [
    ({"avx512_bf16": True}, True), ({"amx_bf16": True}, True), ({"bf16": True, "architecture": "arm64"}, True),
    ({"sve_bf16": True}, True), ({"avx512_f": True, "avx512_bw": True, "avx2": True}, False), ({}, False),
])
def test_native_bf16_on_the_cpu_means_bf16_instructions(monkeypatch, capabilities: dict, native: bool):
    monkeypatch.setattr(precision, "cpu_capabilities", lambda: capabilities)
    assert precision.native_bf16(CPU) is native


def test_fp32_is_plain_float32(bf16_cpu):
    assert precision.configure("fp32", CPU) is False
    assert not torch.backends.cuda.matmul.allow_tf32
    with precision.autocast(CPU, False):
        assert torch.nn.Linear(4, 2)(torch.ones(3, 4)).dtype == torch.float32
    assert precision.cache_dtype(False) == torch.float32


def test_bf16_on_a_cpu_that_has_it_runs_the_products_in_bfloat16(bf16_cpu, caplog):
    with caplog.at_level(logging.INFO, logger="tspnet.precision"):
        assert precision.configure("bf16", CPU) is True
    assert "bfloat16" in caplog.text
    layer = torch.nn.Linear(4, 2)
    with precision.autocast(CPU, True):
        out = layer(torch.ones(3, 4))
    assert out.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    assert precision.cache_dtype(True) == torch.bfloat16


def test_bf16_on_a_cpu_without_it_is_refused_with_one_line(no_bf16_cpu, caplog):
    with pytest.raises(DataError, match=r"base\.precision is bf16.*AVX512_BF16.*set base\.precision: fp32"):
        precision.configure("bf16", CPU)
    # Through a stage's setup: one logged line and exit status 2, no traceback.
    with pytest.raises(SystemExit) as exit_info, caplog.at_level(logging.ERROR):
        with reported_errors():
            setup_torch({"seed": 0, "device": "cpu", "precision": "bf16"})
    assert exit_info.value.code == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage() and errors[0].exc_info is None
    # fp32 still runs there.
    assert setup_torch({"seed": 0, "device": "cpu", "precision": "fp32"}) == CPU


def test_unknown_precision_and_tf32_on_the_cpu(caplog):
    with pytest.raises(DataError, match="base.precision must be one of fp32, tf32, bf16"):
        precision.configure("fp16", CPU)
    with caplog.at_level(logging.WARNING):
        assert precision.configure("tf32", CPU) is False
    assert "computes in float32" in caplog.text
    precision.configure("fp32", CPU)


def test_uses_bf16_reads_the_param():
    assert uses_bf16({"precision": "bf16"}, CPU) and not uses_bf16({"precision": "fp32"}, CPU)
    assert not uses_bf16({}, CPU)


# ------------------------------------------------------------------ training and inference under bf16
def toy_problem(seed: int = 0):
    """6 videos of pooled features (float32) with proposals, points and labels."""
    rng = np.random.default_rng(seed)
    counts = [5, 9, 3, 12, 7, 4]
    names = [f"v{i}" for i in range(len(counts))]
    index = np.repeat(np.arange(len(counts)), counts)
    start = rng.uniform(0, 30, len(index))
    proposals = Proposals(names, index, start, start + rng.uniform(1, 10, len(index)),
                          np.zeros(len(index), np.int64), np.ones(len(index)))
    points = pd.DataFrame({"point_id": np.arange(6), "video": names, "class_index": [0, 1, 2, 0, 1, 2],
                           "time": [s + 1.0 for s in start[np.cumsum([0] + counts[:-1])]]})
    labels = assign_labels(proposals, points, CLASSES, 0.4)
    pooled = torch.from_numpy(rng.normal(size=(len(index), 3 * DIM)).astype(np.float32))
    config = train.TrainConfig(iterations=6, batch_videos=4, max_proposals=3000, lr=1e-3, weight_decay=1e-3,
                               dropout=0.5, roi_bins=12, widen_ratio=0.25, cls_weight=1.0, center_weight=20.0,
                               soft_value=0.4, update_every=3, update_threshold=0.5, log_every=1)
    return pooled, proposals, points, labels, config


def one_step(pooled: torch.Tensor, bf16: bool):
    """One training step without dropout from fixed weights: (loss terms, applied gradients, model)."""
    _, proposals, _, labels, config = toy_problem()
    torch.manual_seed(2)
    model = TSPNet(DIM, CLASSES, dropout=0.0)
    optimizer = train.build_optimizer(model, config)
    grads = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: grads.extend(
        p.grad.clone() for p in model.parameters()))
    rows, video_index = train.batch_rows([0, 1, 3, 5], proposals.video_slices(), 3000, torch.Generator())
    terms = train.train_step(model, optimizer, pooled, train.label_tensors(labels, CPU), rows, video_index, 4,
                             config, bf16)
    return terms, grads, model, optimizer


def test_a_bf16_step_keeps_weights_gradients_optimizer_and_losses_in_float32():
    pooled = toy_problem()[0]
    terms, grads, model, optimizer = one_step(pooled.to(torch.bfloat16), bf16=True)
    assert all(t.dtype == torch.float32 for t in terms)
    assert all(g.dtype == torch.float32 for g in grads)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(v.dtype == torch.float32 for state in optimizer.state.values() for k, v in state.items()
               if k != "step")
    # The same step in float32: bfloat16's 8-bit mantissa moves the loss and gradients by about 1%.
    expected, expected_grads, _, _ = one_step(pooled, bf16=False)
    assert float(terms.total) != float(expected.total)  # it really computed in bfloat16
    torch.testing.assert_close(terms.total, expected.total, rtol=2e-2, atol=0)
    flat, flat_expected = torch.cat([g.flatten() for g in grads]), torch.cat([g.flatten() for g in expected_grads])
    assert float((flat - flat_expected).norm() / flat_expected.norm()) < 5e-2


def test_a_bfloat16_cache_gives_the_step_of_a_float32_cache_under_autocast():
    """Storing the pooled inputs in bfloat16 is the rounding autocast would do anyway: the same bits."""
    pooled = toy_problem()[0]
    terms, grads, model, _ = one_step(pooled.to(torch.bfloat16), bf16=True)
    terms32, grads32, model32, _ = one_step(pooled, bf16=True)
    assert torch.equal(terms.total, terms32.total)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads32))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model32.parameters()))


def test_bf16_predict_returns_float32_heads_near_the_fp32_ones():
    pooled = toy_problem()[0]
    torch.manual_seed(0)
    model = TSPNet(DIM, CLASSES)
    heads = train.predict(model, pooled.to(torch.bfloat16), batch=7, bf16=True)
    expected = train.predict(model, pooled, batch=7)
    for got, want in zip(heads, expected):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=3e-2 * float(want.abs().max()))


def test_bf16_training_is_deterministic_and_keeps_float32_weights():
    pooled, proposals, points, labels, config = toy_problem()
    runs = [train.train_tspnet(pooled.to(torch.bfloat16), proposals, points, labels, CLASSES, config, seed=3,
                               show_progress=False, bf16=True) for _ in range(2)]
    assert len(runs[0].updates) == 2  # saliency updates scored the proposals under autocast too
    for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters()):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]
