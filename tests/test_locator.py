"""The built-in base locator: segment grouping, outer-inner scoring, no post-processing."""

import numpy as np

from tspnet.locator import outer_inner_contrast, segments_above


def test_consecutive_snippets_above_a_level_form_half_open_segments():
    activation = np.array([0.1, 0.6, 0.7, 0.2, 0.9, 0.9, 0.9, 0.1, 0.8])
    np.testing.assert_array_equal(segments_above(activation, 0.5), [[1, 3], [4, 7], [8, 9]])
    np.testing.assert_array_equal(segments_above(activation, 0.85), [[4, 7]])
    assert segments_above(activation, 0.95).shape == (0, 2)


def test_outer_inner_contrast_by_hand():
    activation = np.array([0.0, 0.2, 0.8, 1.0, 0.6, 0.2, 0.0, 0.0])
    # Segment [2, 5): inner mean (0.8 + 1.0 + 0.6) / 3 = 0.8; margin max(1, round(3 * 0.25)) = 1:
    # outer snippets 1 and 5 -> (0.2 + 0.2) / 2 = 0.2; contrast 0.6.
    # Segment [0, 2) at the start: inner 0.1; margin 1, only snippet 2 outside -> 0.8; contrast -0.7.
    scores = outer_inner_contrast(activation, np.array([[2, 5], [0, 2]]), 0.25)
    np.testing.assert_allclose(scores, [0.6, -0.7])


def test_proposals_are_not_post_processed(tmp_path):
    """Several thresholds give nested, overlapping, even duplicate segments: all are kept (no NMS)."""
    import torch

    from tspnet.datasets import FeatureStore
    from tspnet.locator import LocatorConfig, SnippetClassifier, propose

    config = LocatorConfig(hidden=4, dropout=0.0, epochs=1, batch_videos=1, lr=0.0, weight_decay=0.0,
                           background_ratio=0.1, point_margin=1, video_topk_ratio=0.5, class_threshold=0.0,
                           act_thresholds=(0.2, 0.4, 0.6), outer_ratio=0.25)
    model = SnippetClassifier(2, 1, 4, 0.0).eval()
    with torch.no_grad():  # make the class-0 probability follow feature 0 exactly: a fixed bump
        for p in model.parameters():
            p.zero_()
        model.embed.weight[0, 2] = 1.0  # the middle tap of the window reads feature 0 of the snippet
        model.classify.weight[0, 0] = 1.0
        model.classify.bias[1] = 1.0  # background logit
    bump = np.array([-3, -1, 0.5, 2, 3, 2, 0.5, -1, -3], dtype=np.float32)
    store = FeatureStore(["v"], torch.from_numpy(np.stack([bump, np.zeros(9, np.float32)], 1)),
                         torch.tensor([0]), torch.tensor([9]))
    table = propose(model, store, config, ["Jump"], snippets_per_second=1.0, show_progress=False)
    # p(class 0) = sigmoid(relu(x) - 1): 0.27 where x <= 0, above 0.6 only where x > 1.41.
    # Level 0.2 -> the whole video [0, 9); levels 0.4 and 0.6 -> the same [3, 6) twice: kept twice.
    segments = sorted(map(tuple, table[["start", "end"]].to_numpy().tolist()))
    assert segments == [(0.0, 9.0), (3.0, 6.0), (3.0, 6.0)]
    assert set(table["label"]) == {"Jump"}
