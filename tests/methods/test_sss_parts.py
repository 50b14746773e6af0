"""SSS building blocks: EMA teacher math, confidence masking, masked losses, DFE shapes / start / ablation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medsam_kit.methods.sss import (
    DFE,
    EMATeacher,
    MaskedCoarseLoss,
    MaskedMaskLoss,
    PseudoLabelCalibration,
    coarse_pseudo_labels,
    decoder_pseudo_masks,
    ema_momentum,
    feature_widths,
)
from medsam_kit.models.segmenter_model import Features


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.register_buffer("running", torch.zeros(2))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))


def test_ema_update_is_the_exact_formula_and_copies_buffers():
    torch.manual_seed(0)
    student = _Tiny()
    teacher = EMATeacher(student)
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
    start = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    with torch.no_grad():  # the student moves (an optimizer step) and its buffers change
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student.running.fill_(3.0)
        student.count.fill_(7)
    teacher.update(student, 0.9)
    for name, p in student.named_parameters():
        expected = 0.9 * start[name] + 0.1 * p.detach()
        torch.testing.assert_close(teacher.model.get_parameter(name), expected, rtol=0, atol=1e-7)
    assert teacher.model.running.tolist() == [3.0, 3.0] and int(teacher.model.count) == 7
    teacher.update(student, 0.0)  # momentum 0: the teacher becomes the student
    for name, p in student.named_parameters():
        assert torch.equal(teacher.model.get_parameter(name), p.detach())
    state = teacher.state_dict()
    assert all(t.device.type == "cpu" for t in state.values())
    with pytest.raises(ValueError, match="momentum"):
        teacher.update(student, 1.5)


def test_ema_momentum_warmup_rule():
    assert ema_momentum(0.996, 1) == 0.5
    assert ema_momentum(0.996, 9) == pytest.approx(0.9)
    assert ema_momentum(0.996, 10_000) == 0.996
    assert ema_momentum(0.996, 1, warmup=False) == 0.996


def test_coarse_pseudo_labels_and_confidence_mask():
    logits = torch.zeros(1, 3, 1, 3)
    logits[0, 1, 0, 0] = 10.0  # sure of class 1
    logits[0, 2, 0, 1] = 1.0  # leaning to class 2
    labels, confidence, mask = coarse_pseudo_labels(logits, threshold=0.95)
    assert labels.tolist() == [[[1, 2, 0]]]
    probs = torch.softmax(logits, dim=1).max(dim=1).values
    torch.testing.assert_close(confidence, probs)
    assert mask.tolist() == [[[True, False, False]]]
    assert coarse_pseudo_labels(logits, threshold=0.3)[2].all()


def test_pseudo_label_calibration_counts_coverage_and_precision_per_threshold():
    # 4 pixels, background / foreground: (p background, true class)
    cases = [(0.99, 0), (0.85, 1), (0.03, 1), (0.4, 1)]  # right & sure, wrong, right & sure, right & unsure
    p = torch.tensor([c[0] for c in cases]).view(1, 1, 2, 2)
    logits = torch.log(torch.cat([p, 1 - p], dim=1))
    truth = torch.tensor([c[1] for c in cases]).view(1, 2, 2)
    calibration = PseudoLabelCalibration(2)
    calibration.add(logits[:, :, :1], truth[:, :1])  # two calls accumulate (chunks of a volume)
    calibration.add(logits[:, :, 1:], truth[:, 1:])
    summary = calibration.summary([0.5, 0.8, 0.95])
    assert summary["0.95"]["coverage"] == 0.5 and summary["0.95"]["precision"] == 1.0
    assert summary["0.95"]["classes"][1] == {"coverage": pytest.approx(1 / 3), "precision": 1.0}
    assert summary["0.8"]["coverage"] == 0.75 and summary["0.8"]["precision"] == pytest.approx(2 / 3)
    assert summary["0.8"]["classes"][0] == {"coverage": 1.0, "precision": 0.5}
    assert summary["0.5"]["coverage"] == 1.0 and summary["0.5"]["precision"] == 0.75
    assert summary["0.5"]["classes"][1] == {"coverage": pytest.approx(2 / 3), "precision": 1.0}
    empty = PseudoLabelCalibration(3)
    empty.add(logits.new_zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))  # 1/3 confidence everywhere
    assert empty.summary([0.5])["0.5"] == {"coverage": 0.0, "precision": None, "classes": {
        0: {"coverage": 0.0, "precision": None}, 1: {"coverage": None, "precision": None},
        2: {"coverage": None, "precision": None}}}


def test_distribution_alignment_lifts_an_under_predicted_class():
    from medsam_kit.methods.sss.pseudo import DistributionAlignment

    align = DistributionAlignment(torch.tensor([80.0, 20.0]), momentum=0.0)  # labeled data: 20 % foreground
    matched = torch.tensor([0.8, 0.2]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    torch.testing.assert_close(align(matched), matched)  # proportions already match: unchanged
    # a teacher that says "background, 90 % sure" everywhere (foreground share 10 % instead of 20 %)
    under = torch.tensor([0.9, 0.1]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    aligned = align(under)
    ratio = torch.tensor([0.8 / 0.9, 0.2 / 0.1])
    expected = torch.tensor([0.9, 0.1]) * ratio / (torch.tensor([0.9, 0.1]) * ratio).sum()
    torch.testing.assert_close(aligned[0, :, 0, 0], expected.float())
    assert aligned[0, 0, 0, 0] < 0.9 and torch.allclose(aligned.sum(1), torch.ones(1, 2, 2))
    assert coarse_pseudo_labels(torch.log(aligned), 0.85)[2].sum() == 0  # no longer confident background
    with pytest.raises(ValueError, match="non-negative"):
        DistributionAlignment(torch.tensor([0.0, 0.0]))


def test_decoder_pseudo_masks_are_confident_on_both_sides():
    logits = torch.tensor([[[[6.0, -6.0, 0.5, -0.5]]]])  # (P, 1, H, W)
    targets, mask = decoder_pseudo_masks(logits, threshold=0.95)
    assert targets.tolist() == [[[True, False, True, False]]]
    assert mask.tolist() == [[[True, True, False, False]]]


def test_masked_losses_ignore_unconfident_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8)
    labels = torch.randint(0, 4, (2, 8, 8))
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, :4] = True
    loss = MaskedCoarseLoss()
    base = loss(logits, labels, mask)
    changed = logits.clone()
    changed[:, :, 4:] = torch.randn(2, 4, 4, 8) * 5  # only unconfident pixels change
    torch.testing.assert_close(loss(changed, labels, mask), base)
    assert loss(logits, labels, torch.zeros_like(mask)).item() == pytest.approx(0.0, abs=1e-6)
    # CE is normalised by all pixels: half the pixels confident -> half the full-mask CE term
    ce_only = MaskedCoarseLoss(dice_weight=0.0)
    full = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    torch.testing.assert_close(ce_only(logits, labels, mask), full[mask].sum() / full.numel())
    # better logits on the confident pixels -> lower loss
    good = logits.clone()
    good.scatter_(1, labels[:, None], 20.0)
    assert loss(good, labels, mask) < base

    mask_loss = MaskedMaskLoss()
    dec_logits = torch.randn(3, 1, 8, 8)
    targets = torch.rand(3, 8, 8) > 0.5
    dmask = torch.rand(3, 8, 8) > 0.3
    dbase = mask_loss(dec_logits, targets, dmask)
    flipped = torch.where(dmask[:, None], dec_logits, -dec_logits * 3)
    torch.testing.assert_close(mask_loss(flipped, targets, dmask), dbase)
    assert torch.isfinite(mask_loss(dec_logits, targets, torch.zeros_like(dmask)))


def _features(batch=2, widths=(32, 4, 8), size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    embed = torch.randn(batch, widths[0], size // 16, size // 16, generator=g)
    strides = (4, 8)  # SAM-2's high-resolution maps
    high = tuple(torch.randn(batch, c, size // s, size // s, generator=g)
                 for c, s in zip(widths[1:], strides, strict=True))
    return Features(embed, high)


def test_dfe_shapes_per_scale_and_identity_at_start():
    weak, strong = _features(seed=0), _features(seed=1)
    assert feature_widths(strong) == [32, 4, 8]
    dfe = DFE(feature_widths(strong), width=16)
    out = dfe(weak, strong)
    assert out.image_embed.shape == strong.image_embed.shape
    assert [t.shape for t in out.high_res] == [t.shape for t in strong.high_res]
    # zero-initialised output projections: at the start DFE passes the strong features through
    torch.testing.assert_close(out.image_embed, strong.image_embed)
    for a, b in zip(out.high_res, strong.high_res, strict=True):
        torch.testing.assert_close(a, b)
    assert dfe.last_similarity.shape == (2, 3) and (dfe.last_similarity.abs() <= 1 + 1e-6).all()
    # the output projections get gradients at once; after a step the features change
    sum(t.sum() for t in (out.image_embed, *out.high_res)).backward()
    assert all(conv.weight.grad.abs().sum() > 0 for conv in dfe.project_out)
    with torch.no_grad():
        for conv in dfe.project_out:
            conv.weight.normal_(0, 0.1)
    moved = dfe(weak, strong)
    assert not torch.allclose(moved.image_embed, strong.image_embed)
    assert not torch.allclose(moved.high_res[0], strong.high_res[0])


def test_dfe_fusion_formula_on_identical_views():
    # A = B: s = 1, w = sigmoid(1); F = w MLP(a) + (1 - w) MLP(a) + 0 = MLP(a)
    dfe = DFE([8], width=8)
    with torch.no_grad():
        dfe.project_out[0].weight.copy_(torch.eye(8)[:, :, None, None])
    feats = Features(torch.randn(2, 8, 4, 4))
    out = dfe(feats, feats)
    a = dfe.shared(dfe.project_in[0](feats.image_embed))
    torch.testing.assert_close(out.image_embed, feats.image_embed + dfe.mlp(a), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dfe.last_similarity, torch.ones(2, 1))


def test_dfe_single_scale_sam1_and_shape_checks():
    dfe = DFE([16], width=8)
    weak = Features(torch.randn(2, 16, 4, 4))
    out = dfe(weak, Features(torch.randn(2, 16, 4, 4)))
    assert out.high_res == () and out.image_embed.shape == (2, 16, 4, 4)
    with pytest.raises(ValueError, match="widths"):
        dfe(_features(widths=(16, 4, 8)), _features(widths=(16, 4, 8)))
    with pytest.raises(ValueError, match="same shapes"):
        dfe(weak, Features(torch.randn(3, 16, 4, 4)))


def test_class_thresholds_follow_each_class_confidence():
    from medsam_kit.methods.sss.pseudo import ClassThresholds

    thresholds = ClassThresholds(3, ceiling=0.95, momentum=0.5)
    labels = torch.tensor([[[0, 0, 1, 2]]])
    confidence = torch.tensor([[[0.99, 0.97, 0.6, 0.4]]])
    thresholds.update(confidence, labels)
    # class 0: mean 0.98 -> 0.5 * 0.95 + 0.5 * 0.98, capped at 0.95; class 1: 0.775; class 2: 0.675
    torch.testing.assert_close(thresholds.thresholds(), torch.tensor([0.95, 0.775, 0.675]))
    thresholds.update(torch.tensor([[[0.9]]]), torch.tensor([[[1]]]))  # classes 0 and 2 unseen: unchanged
    torch.testing.assert_close(thresholds.thresholds(), torch.tensor([0.95, 0.8375, 0.675]))
    mask = thresholds.confident(torch.tensor([[[0.96, 0.8, 0.7]]]), torch.tensor([[[0, 1, 2]]]))
    assert mask.tolist() == [[[True, False, True]]]
    restored = ClassThresholds(3)
    restored.load_state_dict(thresholds.state_dict())
    assert torch.equal(restored.thresholds(), thresholds.thresholds())


def test_adaptive_threshold_mode_is_checked():
    from medsam_kit.methods.sss.method import SSSParams

    with pytest.raises(ValueError, match="threshold_mode"):
        SSSParams(threshold_mode="sometimes")
