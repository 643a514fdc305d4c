"""LACP's network (LACP.md section 2): packed forward, fused CAS, top-k video scores."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.reference.lacp_train_loop import forward_loop
from tspnet.lacp.model import (LACPNet, Packing, conv_to_linear, fused_cas, linear_to_conv, pack_rows, predict,
                               topk_sizes, video_scores)


def test_conv_weights_become_the_linear_map_of_each_window_and_back():
    weight = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3)  # [H=2, D=3, K=3]
    linear = conv_to_linear(weight)
    # Window [x[t-1] (3 dims), x[t], x[t+1]]: tap k of input channel d is column k * D + d.
    assert linear.shape == (2, 9)
    assert linear[1, 0 * 3 + 2] == weight[1, 2, 0] and linear[0, 2 * 3 + 1] == weight[0, 1, 2]
    assert torch.equal(linear_to_conv(linear, 3), weight)


def test_packed_forward_equals_one_video_at_a_time_including_video_edges():
    torch.manual_seed(0)
    model = LACPNet(5, 3, hidden=7, dropout=0.0).eval()
    lengths = [4, 1, 2, 9]
    videos = [torch.randn(t, 5) for t in lengths]
    embedding, probs = model(torch.cat(videos), Packing.of(lengths))
    rows = 0
    for video in videos:
        _, fused, hidden = forward_loop(model, video, None, r_act=8)
        part = slice(rows, rows + len(video))
        torch.testing.assert_close(embedding[part], hidden, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fused_cas(probs[part]), fused, rtol=1e-5, atol=1e-6)
        rows += len(video)


def test_initial_weights_are_the_authors_conv1d_draws():
    torch.manual_seed(3)
    conv = torch.nn.Conv1d(4, 6, kernel_size=3, padding=1)
    classifier = torch.nn.Conv1d(6, 3, kernel_size=1, bias=False)
    torch.manual_seed(3)
    model = LACPNet(4, 2, hidden=6)
    assert torch.equal(model.embed.weight, conv_to_linear(conv.weight))
    assert torch.equal(model.embed.bias, conv.bias)
    assert torch.equal(model.classifier.weight, classifier.weight[:, :, 0])
    assert sum(p.numel() for p in LACPNet(2048, 20).parameters()) == 12_627_968  # LACP.md section 2


def test_fused_cas_by_hand():
    probs = torch.tensor([[0.5, 0.8, 0.25], [1.0, 0.0, 0.9]])  # two classes, background last
    expected = torch.tensor([[0.375, 0.6, 0.25], [0.1, 0.0, 0.9]])
    torch.testing.assert_close(fused_cas(probs), expected)


def test_video_scores_top_k_over_each_videos_own_snippets_by_hand():
    # Video 0: T = 16 -> k = 2; video 1: T = 3 < r_act -> k = max(1, 0) = 1 (the authors' k = 0 gives NaN).
    p0 = torch.zeros(16, 2)
    p0[:, 0] = torch.linspace(0.0, 0.75, 16)  # top two: 0.75, 0.7
    p0[:, 1] = 0.2
    p1 = torch.tensor([[0.1, 0.9], [0.3, 0.4], [0.2, 0.0]])
    probs = torch.cat([p0, p1])
    probs = torch.cat([probs, torch.zeros(len(probs), 1)], dim=1)  # background column, ignored
    packing = Packing.of([16, 3])
    assert topk_sizes(packing.lengths, 8).tolist() == [2, 1]
    scores = video_scores(probs, packing, r_act=8)
    torch.testing.assert_close(scores, torch.tensor([[0.725, 0.2], [0.3, 0.9]]))
    # With labels: the top-k mean for labelled classes, the plain mean over the video for the others (quirk 6).
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(video_scores(probs, packing, 8, labels), torch.tensor([[0.725, 0.2], [0.2, 0.9]]))


def test_padding_never_enters_a_top_k_even_with_low_probabilities():
    probs = torch.full((10, 2), 1e-6)
    packing = Packing.of([8, 2])
    assert torch.all(video_scores(probs, packing, r_act=1) == torch.tensor(1e-6))


def test_predict_gives_the_same_cas_whatever_the_grouping():
    torch.manual_seed(1)
    model = LACPNet(3, 2, hidden=5, dropout=0.7)
    lengths = np.array([5, 12, 1, 7])
    features = torch.randn(int(lengths.sum()), 3)
    offsets = np.cumsum(lengths) - lengths
    whole, scores = predict(model, features, offsets, lengths, r_act=8)
    alone, scores_alone = predict(model, features, offsets, lengths, r_act=8, max_rows=1)
    assert model.training  # predict restores the mode it found
    assert [c.shape for c in whole] == [(5, 3), (12, 3), (1, 3), (7, 3)]
    for a, b in zip(whole, alone):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(scores, scores_alone, rtol=1e-6)
    assert pack_rows(lengths, 13) == [[0], [1, 2], [3]]  # 5 | 12 + 1 | 7


def test_packing_refuses_an_empty_video():
    with pytest.raises(ValueError, match="at least one snippet"):
        Packing.of([3, 0])


def test_dropout_is_applied_after_the_embedding_only_in_training():
    torch.manual_seed(0)
    model = LACPNet(3, 2, hidden=64, dropout=0.7)
    features, packing = torch.randn(6, 3), Packing.of([6])
    embedding_train, probs_train = model.train()(features, packing)
    embedding_eval, probs_eval = model.eval()(features, packing)
    torch.testing.assert_close(embedding_train, embedding_eval)  # F is taken before dropout
    assert not torch.allclose(probs_train, probs_eval)  # dropout on the embedding, before the classifier
    logits = F.linear(embedding_eval, model.classifier.weight)
    torch.testing.assert_close(probs_eval, torch.sigmoid(logits))


def test_dropout_keeps_each_element_with_probability_one_minus_p_and_rescales():
    from tspnet.lacp.model import dropout

    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    out = dropout(x, 0.7, training=True)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.3) < 0.002  # 1e6 draws: 4.6e-4 standard deviation
    torch.testing.assert_close(out[kept], torch.full((int(kept.sum()),), 1 / 0.3))
    assert dropout(x, 0.7, training=False) is x and dropout(x, 0.0, training=True) is x
