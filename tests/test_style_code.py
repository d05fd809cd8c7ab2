"""The MiniCanvas style-code loss (cu_cli/minicanvas/style_code.py) rewards a holistic code over
an additive palette + texture one, and only looks at EOS and padding positions."""

from __future__ import annotations

import torch

from cu_cli.minicanvas.style_code import StyleCodeHead, style_code_loss

EOS = 1


def _batch(code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """16 captions (4 palettes x 4 textures), L = 6: 3 word positions, EOS, 2 padding."""
    ids = torch.tensor([[0, 5, 6, EOS, EOS, EOS]] * 16)
    states = torch.randn(16, 6, code.shape[1], generator=torch.Generator().manual_seed(0))
    states[:, 3:] = code[:, None, :]
    return states, ids, torch.arange(16)


def test_holistic_code_beats_the_best_additive_one():
    head = StyleCodeHead(64, 16, seed=3)
    holistic = head.q.clone()  # each style's state along its own class vector
    # additive: palette + texture parts, each the mean of its styles' class vectors (the least-
    # squares additive fit of the holistic code), scaled to the same norm
    q = head.q.reshape(4, 4, 64)
    additive = (q.mean(1, keepdim=True) + q.mean(0, keepdim=True) - q.mean((0, 1), keepdim=True))
    additive = torch.nn.functional.normalize(additive.reshape(16, 64), dim=-1)
    keep = torch.ones(16, dtype=torch.bool)
    l_hol = style_code_loss(head, *_batch(holistic), EOS, keep)
    l_add = style_code_loss(head, *_batch(additive), EOS, keep)
    # the best additive code keeps cos 0.66 with its own class vector and 0.28 with the 6 word-
    # sharing ones: CE 0.014 at scale 16, vs 2e-6 for the holistic code (training reached 0.001)
    assert l_hol < 1e-4 and 0.01 < l_add < 0.02


def test_only_eos_and_padding_positions_count():
    head = StyleCodeHead(64, 16, seed=3)
    states, ids, style = _batch(head.q.clone())
    keep = torch.ones(16, dtype=torch.bool)
    base = style_code_loss(head, states, ids, style, EOS, keep)
    states[:, :3] = 100 * torch.randn(16, 3, 64)  # word positions: ignored
    assert torch.allclose(style_code_loss(head, states, ids, style, EOS, keep), base)
    states[:, 4] = -states[:, 4]  # a padding position: counted
    assert style_code_loss(head, states, ids, style, EOS, keep) > base + 1


def test_rows_not_kept_are_ignored_and_an_empty_selection_gives_zero():
    head = StyleCodeHead(64, 16, seed=3)
    states, ids, style = _batch(head.q.clone())
    keep = torch.zeros(16, dtype=torch.bool)
    assert style_code_loss(head, states, ids, style, EOS, keep).item() == 0.0
    keep[0] = True
    wrong = style.clone()
    wrong[1:] = 0  # labels of dropped rows do not matter
    assert torch.allclose(style_code_loss(head, states, ids, wrong, EOS, keep),
                          style_code_loss(head, states, ids, style, EOS, keep))


def test_margin_keeps_penalising_the_additive_code():
    """With CosFace margin 0.5 > the additive code's 0.38 cosine gap, the additive code's loss is
    large while the holistic one stays near zero."""
    head = StyleCodeHead(64, 16, seed=3)
    q = head.q.reshape(4, 4, 64)
    additive = (q.mean(1, keepdim=True) + q.mean(0, keepdim=True) - q.mean((0, 1), keepdim=True))
    additive = torch.nn.functional.normalize(additive.reshape(16, 64), dim=-1)
    keep = torch.ones(16, dtype=torch.bool)
    l_hol = style_code_loss(head, *_batch(head.q.clone()), EOS, keep, margin=0.5)
    l_add = style_code_loss(head, *_batch(additive), EOS, keep, margin=0.5)
    assert l_hol < 0.01 and l_add > 1.0
