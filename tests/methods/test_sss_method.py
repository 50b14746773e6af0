"""SSS method: loss on a fake batch (forward + backward), DFE switch, teacher update, state round trip, config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import object_volume

from medsam_kit.methods import SSSMethod, SSSParams, get_method, method_params


def _batch(size=64, z=2):
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(2, size, size, dtype=torch.int64)
    labels[:, 10:30, 10:40] = 1
    labels[1, 40:60, 40:60] = 2
    unlabeled = {"image": torch.rand(3, 1, size, size, generator=g), "case_id": ["u0", "u1", "u0"],
                 "patch_origin": torch.tensor([[z, 8, 8], [z, 0, 4], [z, 10, 10]])}
    return {"image": torch.rand(2, 1, size, size, generator=g), "label": labels, "unlabeled": unlabeled}


def _method(context, **params):
    method = SSSMethod(SSSParams(**{"threshold": 0.5, "max_prompts": 4, **params}))
    method.setup(context)
    # Teacher volume labels = the known objects, so PCSW prompts exist (an untrained teacher finds none).
    method.pcsw.coarse_volume = lambda case_id: object_volume()
    return method


def test_loss_forward_backward_with_dfe_and_pcsw_prompts(fake_context):
    context = fake_context()
    model = context.model
    method = _method(context)
    loss, logs = method.loss(model, _batch(), step=3)
    assert set(logs) == {"loss", "sup_loss", "coarse_loss", "decoder_loss", "prompts", "unsup_loss",
                         "unsup_coarse_loss", "unsup_decoder_loss", "unlabeled_weight", "conf_ratio",
                         "pcsw_prompts", "dfe_similarity"}
    assert all(math.isfinite(v) for v in logs.values())
    assert logs["pcsw_prompts"] == 6.0  # both classes' PCSW windows ([1, 3) and [2, 4)) hold slice 2; 3 crops
    assert 0.0 < logs["conf_ratio"] <= 1.0
    assert logs["loss"] == pytest.approx(logs["sup_loss"] + logs["unsup_loss"], rel=1e-5)
    assert logs["unsup_loss"] == pytest.approx(logs["unsup_coarse_loss"] + logs["unsup_decoder_loss"], rel=1e-5)
    loss.backward()
    grads = {name: sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)
             for name, params in model.parameter_groups().items()}
    assert grads["image_encoder"] > 0 and grads["mask_decoder"] > 0 and grads["coarse_head"] > 0
    assert all(p.grad is not None for p in method.dfe.project_out.parameters())
    assert all(p.grad is None for p in method.teacher.model.parameters())
    again, again_logs = method.loss(model, _batch(), step=3)  # views and prompts seeded by the step
    assert again.item() == loss.item()
    other, _ = method.loss(model, _batch(), step=4)
    assert other.item() != loss.item()


def test_dfe_off_has_no_parameters_and_matches_dfe_at_its_identity_start(fake_context):
    context = fake_context()
    on = _method(context)
    off = _method(context, dfe=False)
    assert off.dfe is None and off.parameters() == [] and "dfe" not in off.state_dict()
    assert len(on.parameters()) > 0 and "dfe" in on.state_dict()
    # DFE starts as the identity on the strong features, so both see the same features at step 0
    with torch.no_grad():
        loss_on, logs_on = on.loss(context.model, _batch(), 0)
        loss_off, logs_off = off.loss(context.model, _batch(), 0)
    assert "dfe_similarity" not in logs_off
    assert loss_off.item() == pytest.approx(loss_on.item(), rel=1e-4)


def test_after_step_updates_teacher_and_state_round_trip(fake_context):
    context = fake_context()
    model = context.model
    method = _method(context)
    params = list(model.parameters()) + method.parameters()
    optimizer = torch.optim.SGD(params, lr=0.1)
    teacher_before = {k: v.clone() for k, v in method.teacher.model.state_dict().items()}
    loss, _ = method.loss(model, _batch(), 0)
    loss.backward()
    optimizer.step()
    method.after_step(model, 1)  # warm-up momentum min(0.996, 1 - 1/2) = 0.5
    name = "coarse_head.classifier.weight"
    expected = 0.5 * teacher_before[name] + 0.5 * model.state_dict()[name]
    torch.testing.assert_close(method.teacher.model.state_dict()[name], expected)

    state = method.state_dict()
    assert set(state) == {"teacher", "pcsw", "dfe"}
    assert all(t.device.type == "cpu" for t in state["teacher"].values())
    resumed = _method(context)
    resumed.load_state_dict(state)
    assert resumed.pcsw.entries == method.pcsw.entries
    for key, value in method.teacher.model.state_dict().items():
        assert torch.equal(resumed.teacher.model.state_dict()[key], value)
    with torch.no_grad():
        a, _ = method.loss(model, _batch(), 1)
        b, _ = resumed.loss(model, _batch(), 1)
    assert a.item() == b.item()
    fresh = _method(context, dfe=False)
    fresh.load_state_dict({})  # a fresh start: nothing to restore
    with pytest.raises(ValueError, match="no DFE weights"):
        _method(context).load_state_dict(fresh.state_dict())


def test_confidence_threshold_and_ramp_in_logs(fake_context):
    context = fake_context()
    sure = _method(context, threshold=0.0, rampup_steps=10, dfe=False)
    with torch.no_grad():
        _, logs = sure.loss(context.model, _batch(), step=4)
    assert logs["conf_ratio"] == 1.0 and logs["unlabeled_weight"] == pytest.approx(0.5)
    never = _method(context, threshold=1.0, dfe=False)
    with torch.no_grad():
        _, logs = never.loss(context.model, _batch(), step=0)
    assert logs["conf_ratio"] == 0.0 and logs["unsup_coarse_loss"] == pytest.approx(0.0, abs=1e-6)


def test_errors_before_setup_and_without_unlabeled_batch(fake_context):
    method = SSSMethod()
    with pytest.raises(RuntimeError, match="setup"):
        method.loss(None, _batch(), 0)
    assert method.state_dict() == {}
    context = fake_context()
    method.setup(context)
    batch = _batch()
    del batch["unlabeled"]
    with pytest.raises(ValueError, match="unlabeled"):
        method.loss(context.model, batch, 0)


def test_registry_params_and_weak_view_overrides():
    method = get_method("sss", threshold=0.9, dfe=False, coarse_weight=2.0)
    assert isinstance(method, SSSMethod) and method.needs_unlabeled and method.name == "sss"
    assert method.params.threshold == 0.9 and method.supervised.params.coarse_weight == 2.0
    with pytest.raises(ValueError, match="method.bogus"):
        method_params({"name": "sss", "bogus": 1})
    with pytest.raises(ValueError, match="threshold"):
        SSSParams(threshold=1.5)
    with pytest.raises(ValueError, match="cutmix_area"):
        SSSParams(cutmix_area=[0.5, 2.0])
    from medsam_kit.engine.augment import AugmentParams

    base = AugmentParams(probability=0.8, rotate_deg=15.0)
    weak = SSSParams(weak_augment={"flip": 0.5, "scale": [0.9, 1.1]}).weak(base)
    assert weak.flip == 0.5 and weak.scale == (0.9, 1.1) and weak.rotate_deg == 15.0
    assert SSSParams().weak(base) == base
    with pytest.raises(ValueError, match="weak_augment"):
        SSSParams(weak_augment={"shear": 1}).weak(base)


def test_adaptive_thresholds_move_log_and_resume(fake_context):
    context = fake_context()
    method = _method(context, threshold=0.95, threshold_mode="adaptive", threshold_momentum=0.5, dfe=False)
    start = method.class_thresholds.thresholds().clone()
    with torch.no_grad():
        _, logs = method.loss(context.model, _batch(), step=0)
    moved = method.class_thresholds.thresholds()
    assert torch.all(moved <= start) and not torch.equal(moved, start)  # a random-init teacher is unsure
    assert logs["threshold_0"] == pytest.approx(float(moved[0]))
    again = _method(context, threshold=0.95, threshold_mode="adaptive", threshold_momentum=0.5, dfe=False)
    again.load_state_dict(method.state_dict())
    assert torch.equal(again.class_thresholds.thresholds(), moved)


def test_unlabeled_start_trains_supervised_only_and_keeps_the_teacher_a_copy(fake_context):
    context = fake_context()
    model = context.model
    method = _method(context, unlabeled_start=3, rampup_steps=4, dfe=False)
    supervised = method.supervised
    with torch.no_grad():
        early, logs = method.loss(model, _batch(), step=2)  # optimizer step 2 < 3: supervised only
        reference, _ = supervised.loss(model, {k: v for k, v in _batch().items() if k != "unlabeled"}, 2)
    assert early.item() == reference.item() and logs["unlabeled_weight"] == 0.0 and "unsup_loss" not in logs
    with torch.no_grad():
        _, logs = method.loss(model, _batch(), step=4)  # second step of the unlabeled phase: ramp 2 / 4
    assert logs["unlabeled_weight"] == pytest.approx(0.5) and "unsup_loss" in logs
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    method.after_step(model, 3)  # up to unlabeled_start: the teacher is the student
    for t, s in zip(method.teacher.model.parameters(), model.parameters(), strict=True):
        assert torch.equal(t, s)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    method.after_step(model, 4)  # first EMA step of the phase: warm-up momentum 1 - 1/2 = 0.5
    t, s = next(method.teacher.model.parameters()), next(model.parameters())
    assert torch.allclose(t, s - 0.005, atol=1e-6)
    share = _method(fake_context(steps=200), unlabeled_start=0.25, dfe=False)  # a share of train.steps
    assert share.unlabeled_start == 50
    with pytest.raises(ValueError, match="unlabeled_start"):
        SSSParams(unlabeled_start=1.5)


def test_quantile_thresholds_keep_a_share_of_every_class(fake_context):
    from medsam_kit.methods.sss.pseudo import class_quantile_thresholds

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (4, 32, 32), generator=g)
    confidence = 0.4 + 0.6 * torch.rand(4, 32, 32, generator=g) * (1 + labels) / 3  # class 0 least sure
    thresholds = class_quantile_thresholds(confidence, labels, 4, keep=0.3, floor=0.0, ceiling=1.0)
    for c in range(3):
        kept = float((confidence[labels == c] >= thresholds[c]).float().mean())
        assert 0.3 <= kept <= 0.3 + 0.02  # histogram bins of width 1/200
    assert thresholds[0] < thresholds[1] < thresholds[2] and thresholds[3] == 1.0  # no class-3 pixels: ceiling
    clipped = class_quantile_thresholds(confidence, labels, 4, keep=0.3, floor=0.75, ceiling=0.8)
    assert torch.all((clipped >= 0.75) & (clipped <= 0.8))
    context = fake_context()
    method = _method(context, threshold=0.95, threshold_mode="quantile", threshold_keep=0.5, threshold_floor=0.0,
                     dfe=False)
    with torch.no_grad():
        _, logs = method.loss(context.model, _batch(), step=0)
    assert 0.3 < logs["conf_ratio"] < 0.7 and {"threshold_0", "threshold_1", "threshold_2"} <= set(logs)
    with pytest.raises(ValueError, match="threshold_keep"):
        SSSParams(threshold_mode="quantile", threshold_keep=0.0)


def test_no_decoder_term_skips_pcsw_prompts(fake_context):
    context = fake_context()
    method = _method(context, unsup_decoder_weight=0.0, dfe=False)
    with torch.no_grad():
        _, logs = method.loss(context.model, _batch(), step=0)
    assert logs["pcsw_prompts"] == 0.0 and logs["unsup_decoder_loss"] == 0.0 and method.pcsw.computed == 0
    assert logs["unsup_loss"] == pytest.approx(logs["unsup_coarse_loss"], rel=1e-6)


def test_distribution_alignment_is_opt_in_and_resumes(fake_context):
    context = fake_context()
    assert _method(context, dfe=False).alignment is None  # off by default
    method = _method(context, distribution_alignment=True, alignment_momentum=0.5, dfe=False)
    counts = np.bincount(object_volume().reshape(-1), minlength=3)
    torch.testing.assert_close(method.alignment.prior, torch.tensor(counts / counts.sum(), dtype=torch.float64))
    with torch.no_grad():
        _, logs = method.loss(context.model, _batch(), step=0)
    assert math.isfinite(logs["unsup_loss"])
    assert not torch.equal(method.alignment.mean, method.alignment.prior)  # the teacher's proportions were counted
    state = method.state_dict()
    again = _method(context, distribution_alignment=True, alignment_momentum=0.5, dfe=False)
    again.load_state_dict(state)
    torch.testing.assert_close(again.alignment.mean, method.alignment.mean)
