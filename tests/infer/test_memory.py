"""SAM-2 memory propagation (:mod:`medsam_kit.infer.memory`) against Meta's ``SAM2VideoPredictor``.

The tiny registry SAM-2.1 model (128 px, random init, every zero-initialised parameter filled) is
loaded into the official video predictor with the same weights and post-processing flags; the
official predictor gets exactly the normalised frames our encoder sees (its ``images`` are replaced
after ``init_state``). Slices are 128 x 128, so "longest" mode's geometry is the identity, as the
video predictor's square resize is.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from medsam_kit.infer import memory
from medsam_kit.infer.memory import propagate_with_memory
from medsam_kit.infer.slice_predictor import OUTSIDE_LOGIT, SlicePredictor
from medsam_kit.models import load_model
from medsam_kit.models.sam2_builder import build_sam2_module
from medsam_kit.prompts.types import BoxPrompt, PointPrompts, SlicePrompts

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

S = 128
# Measured: at most ~1e-7 on logits of magnitude ~0.1 (no_mem_embed is subtracted again from the cached
# stride-16 map, one rounding step). Memory mistakes move these random-weight logits by 2e-6 (float32
# instead of bfloat16 memory) to 1e-3 (recent slices missing from the bank), so the bound stays tight.
ATOL = 1e-6


def moving_ellipse(nz: int, present: range | None = None, speed: float = 1.5) -> np.ndarray:
    """``(3, Z, S, S)`` float32 in [0, 1]: a bright ellipse drifting down-right on noise, on ``present`` slices."""
    rows, cols = np.mgrid[:S, :S]
    rng = np.random.default_rng(0)
    image = np.zeros((3, nz, S, S), np.float32)
    for z in range(nz):
        inside = ((rows - 50 - z * speed) / 25) ** 2 + ((cols - 60 - z * speed / 1.5) / 18) ** 2 <= 1
        if present is not None and z not in present:
            inside[:] = False
        grey = np.clip(0.15 + 0.7 * inside + 0.05 * rng.standard_normal((S, S)), 0, 1)
        image[:, z] = grey[None] * np.array([1.0, 0.9, 0.8])[:, None, None]
    return image


def box_on(z: int, speed: float = 1.5) -> SlicePrompts:
    """A box around the ellipse of slice ``z`` (slice pixels, end-exclusive)."""
    cy, cx = 50 + z * speed, 60 + z * speed / 1.5
    return SlicePrompts(boxes=(BoxPrompt(cx - 20, cy - 27, cx + 21, cy + 28),))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = load_model("sam2.1_hiera_tiny_test")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # no prompt or position term may vanish by a zero init
        for param in net.parameters():
            if param.numel() and not param.any():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return net


def official_run(model, image: np.ndarray, seeds: dict[int, SlicePrompts], folder) -> tuple[dict, dict]:
    """Meta's SAM2VideoPredictor with ``model``'s weights: ``({z: (Y, X) logits}, {z: object score})``.

    Forward ``propagate_in_video`` then the reverse one, both from their default start, as a user does.
    """
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    arch = copy.deepcopy(model.config["architecture"])
    arch["_target_"] = "sam2.sam2_video_predictor.SAM2VideoPredictor"
    video = build_sam2_module(arch)
    assert isinstance(video, SAM2VideoPredictor)
    video.load_state_dict(model.sam.state_dict())
    video.eval()
    # Same post-processing flags as our model (fill_hole_area and non_overlap_masks stay at their 0 / False).
    video.sam_mask_decoder.dynamic_multimask_via_stability = model.sam.sam_mask_decoder.dynamic_multimask_via_stability
    video.binarize_mask_from_pts_for_mem_enc = model.sam.binarize_mask_from_pts_for_mem_enc

    nz = image.shape[1]
    for z in range(nz):  # init_state reads a JPEG folder; its frames are replaced below
        Image.fromarray((image[:, z].transpose(1, 2, 0) * 255).astype(np.uint8)).save(folder / f"{z}.jpg")
    state = video.init_state(str(folder))
    frames = torch.from_numpy(image).permute(1, 0, 2, 3).contiguous()
    state["images"] = (frames - model.pixel_mean) / model.pixel_std  # exactly SegmenterModel.encode's input
    state["cached_features"] = {}
    transform = SlicePredictor(model).transform((S, S))
    for z, prompts in seeds.items():
        box = transform.box_to_model(prompts.boxes[0]) if prompts.boxes else None
        points = transform.points_to_model(prompts.point_coords) if len(prompts.points) else None
        labels = prompts.point_labels if points is not None else None
        video.add_new_points_or_box(state, z, obj_id=1, points=points, labels=labels, box=box)
    logits = {}
    with torch.no_grad():
        for reverse in (False, True):
            for z, _, masks in video.propagate_in_video(state, reverse=reverse):
                logits[z] = masks[0, 0].numpy()
    outputs = state["output_dict_per_obj"][0]
    scores = {z: float(out["object_score_logits"]) for kind in ("cond_frame_outputs", "non_cond_frame_outputs")
              for z, out in outputs[kind].items()}
    return logits, scores


def assert_close(ours: np.ndarray, official: np.ndarray) -> None:
    np.testing.assert_allclose(ours, official, rtol=0, atol=ATOL)
    # Masks agree wherever the official logit is not within the tolerance of the threshold.
    assert np.all(((ours > 0) == (official > 0)) | (np.abs(official) < ATOL))


@pytest.mark.parametrize("prompted", [{4: "box"}, {2: "box", 5: "box+points"}], ids=["one-box", "two-slices"])
def test_matches_official_video_predictor(model, tmp_path, prompted):
    image = moving_ellipse(8)
    seeds = {}
    for z, kind in prompted.items():
        seeds[z] = box_on(z)
        if kind == "box+points":
            cy, cx = 50 + z * 1.5, 60 + z
            seeds[z] = SlicePrompts(boxes=seeds[z].boxes, points=PointPrompts([[cx, cy], [cx + 30, cy]], [1, 0]))
    official, scores = official_run(model, image, seeds, tmp_path)
    predictor = SlicePredictor(model, batch_size=4)
    ours = propagate_with_memory(predictor, "v", image, seeds, min_area=0, stop_on_object_score=False)

    assert sorted(ours) == sorted(official) == list(range(8))
    assert all(score > 0 for score in scores.values())  # the stop rule would not have changed anything here
    for z in range(8):
        assert ours[z].shape == (S, S) and ours[z].dtype == np.float32
        assert_close(ours[z], official[z])
        assert 0.02 < (official[z] > 0).mean() < 0.98, f"slice {z}: trivial mask"  # not all-empty / all-full
    assert predictor.cache.encoded_slices == 8  # every slice encoded once, through the embedding cache

    if len(seeds) == 1:  # the prompted slice's information reaches the tracked slices through memory
        moved = {4: SlicePrompts(boxes=(BoxPrompt(10, 10, 50, 40),))}
        other = propagate_with_memory(predictor, "v", image, moved, min_area=0, stop_on_object_score=False)
        assert max(np.abs(other[z] - ours[z]).max() for z in (0, 1, 6, 7)) > 50 * ATOL
        assert predictor.cache.encoded_slices == 8


def test_stops_where_the_object_score_says_absent(model, tmp_path, monkeypatch):
    # The ellipse is on slices 3..8 only. Random weights score the slices with the object slightly
    # lower (~0.070-0.076) than the empty ones (~0.083); the object-score head is rescaled to
    # -1000 * (score - 0.080) so that "present" means "the ellipse is there", with a wide margin.
    image = moving_ellipse(12, present=range(3, 9))
    net = copy.deepcopy(model)
    head = net.sam.sam_mask_decoder.pred_obj_score_head.layers[-1]
    with torch.no_grad():
        head.weight.mul_(-1000.0)
        head.bias.sub_(0.080).mul_(-1000.0)
    seeds = {5: box_on(5)}
    official, scores = official_run(net, image, seeds, tmp_path)
    present = sorted(z for z, s in scores.items() if s > 0)
    assert present == list(range(3, 9)), f"precondition: official object scores {scores}"

    tracked = []
    track_step = net.sam.track_step

    def recording(*args, **kwargs):
        out = track_step(*args, **kwargs)
        tracked.append((kwargs["frame_idx"], float(out["object_score_logits"])))
        return out

    monkeypatch.setattr(net.sam, "track_step", recording)
    ours = propagate_with_memory(SlicePredictor(net), "v", image, seeds, min_area=0)

    assert sorted(ours) == present  # slices 2 and 9 (absent) and everything beyond them are not kept
    assert [z for z, _ in tracked] == [5, 6, 7, 8, 9, 4, 3, 2]  # each direction ends at its first absent slice
    assert all((score > 0) == (z in ours) for z, score in tracked)
    # Before the forward stop our memory is the official one (the reverse pass then lacks the
    # official's memory of slices 9-10, so only the forward slices are compared).
    for z in (5, 6, 7, 8):
        assert_close(ours[z], official[z])
        assert (ours[z] > 0).any()


def test_min_area_and_max_distance_end_the_object(model):
    image = moving_ellipse(8)
    seeds = {4: box_on(4)}
    predictor = SlicePredictor(model)
    full = propagate_with_memory(predictor, "v", image, seeds, min_area=0, stop_on_object_score=False)
    near = propagate_with_memory(predictor, "v", image, seeds, min_area=0, stop_on_object_score=False,
                                 max_distance=2)
    assert sorted(near) == [2, 3, 4, 5, 6]
    for z in (4, 5, 6):  # the forward pass has the same memory up to the limit
        np.testing.assert_array_equal(near[z], full[z])
    area = int((full[5] > 0).sum())
    assert int((full[4] > 0).sum()) > area  # precondition: the prompted slice itself passes min_area
    ended = propagate_with_memory(predictor, "v", image, seeds, min_area=area + 1, stop_on_object_score=False)
    assert 4 in ended and 5 not in ended and 6 not in ended  # slice 5 ends the forward direction


def test_memory_bank_stays_bounded(model, monkeypatch):
    nz, prompted = 40, 12
    image = moving_ellipse(nz, speed=0.5)
    seeds = {prompted: box_on(prompted, speed=0.5)}
    sam = model.sam
    sizes = []
    track_step = sam.track_step

    def recording(*args, **kwargs):
        bank = kwargs["output_dict"]
        non_cond = bank["non_cond_frame_outputs"].values()
        sizes.append((len(bank["cond_frame_outputs"]), sum("maskmem_features" in e for e in non_cond), len(non_cond)))
        return track_step(*args, **kwargs)

    monkeypatch.setattr(sam, "track_step", recording)
    predictor = SlicePredictor(model)
    bounded = propagate_with_memory(predictor, "v", image, seeds, min_area=0, stop_on_object_score=False)
    assert sorted(bounded) == list(range(nz))
    mem_reach = sam.num_maskmem - 1  # memory_temporal_stride_for_eval is 1
    ptr_reach = min(nz, sam.max_obj_ptrs_in_encoder) - 1
    assert max(cond for cond, _, _ in sizes) == 1
    # Memory maps: the num_maskmem - 1 latest slices, plus (during the forward pass) those just past the
    # prompt that the reverse pass will read; object pointers likewise with their longer reach.
    assert max(maps for _, maps, _ in sizes) <= 2 * mem_reach < nz - 1
    assert max(entries for _, _, entries in sizes) <= 2 * ptr_reach < nz - 1

    sizes.clear()  # the same run keeping everything: identical logits, so nothing SAM-2 reads was dropped
    monkeypatch.setattr(memory._MemoryBank, "prune", lambda self, z, step, anchors: None)
    unbounded = propagate_with_memory(predictor, "v", image, seeds, min_area=0, stop_on_object_score=False)
    assert max(maps for _, maps, _ in sizes) == nz - 2  # all but the prompted and the current slice
    for z in range(nz):
        np.testing.assert_array_equal(bounded[z], unbounded[z])


def test_matches_official_on_a_long_stack(model, tmp_path):
    """Pruned memory still equals the official predictor (which keeps every frame) over 40 slices."""
    image = moving_ellipse(40, speed=0.5)
    seeds = {12: box_on(12, speed=0.5)}
    official, _ = official_run(model, image, seeds, tmp_path)
    ours = propagate_with_memory(SlicePredictor(model, batch_size=8), "v", image, seeds, min_area=0,
                                 stop_on_object_score=False)
    assert sorted(ours) == sorted(official) == list(range(40))
    for z in range(40):
        assert_close(ours[z], official[z])


@pytest.mark.parametrize("mode", ["longest", "native"])
def test_non_square_slices(model, mode):
    image = moving_ellipse(5)[:, :, 10:106, :]  # (3, 5, 96, 128) in longest mode; native: padded window
    if mode == "native":
        image = np.concatenate([image, image[..., ::-1]], axis=-1)  # (3, 5, 96, 256): two windows across
    seeds = {2: SlicePrompts(boxes=(BoxPrompt(40, 20, 80, 80),))}
    predictor = SlicePredictor(model, mode=mode)
    result = propagate_with_memory(predictor, "v", image, seeds, min_area=0, stop_on_object_score=False)
    assert sorted(result) == list(range(5))
    assert all(r.shape == image.shape[-2:] and r.dtype == np.float32 for r in result.values())
    assert predictor.cache.encoded_slices == 5  # one window for every slice
    if mode == "native":  # the window holding the box is (-16, 0): columns 128.. are outside it
        assert all(np.all(r[:, 128:] == OUTSIDE_LOGIT) and np.any(r[:, :128] != OUTSIDE_LOGIT)
                   for r in result.values())


def test_sam1_model_is_refused():
    torch.manual_seed(0)
    predictor = SlicePredictor(load_model("sam_vit_tiny_test"))
    with pytest.raises(ValueError, match="needs a SAM-2 model"):
        propagate_with_memory(predictor, "v", moving_ellipse(3), {1: box_on(1)})


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ({}, "at least one prompted slice"),
        ({3: box_on(1)}, "slice 3 but the volume has 3 slices"),
        ({1: SlicePrompts(boxes=box_on(1).boxes * 2)}, "one box per object"),
        ({1: SlicePrompts(boxes=box_on(1).boxes, mask=np.zeros((32, 32)))}, "mask prompts are not supported"),
    ],
)
def test_bad_prompts_are_refused(model, seeds, message):
    with pytest.raises(ValueError, match=message):
        propagate_with_memory(SlicePredictor(model), "v", moving_ellipse(3), seeds)


def test_window_only_in_native_mode(model):
    with pytest.raises(ValueError, match="'native' mode"):
        propagate_with_memory(SlicePredictor(model), "v", moving_ellipse(3), {1: box_on(1)}, window=(0, 0))


def test_segmenter_runs_memory_propagation_per_label(model):
    from medsam_kit.infer import PropagationOptions, Segmenter
    from medsam_kit.prompts.types import PromptSet

    image = moving_ellipse(6)
    segmenter = Segmenter(model, propagation=PropagationOptions(method="memory", min_area=1),
                          intensity_to_unit=lambda x: x)  # the image is already model input
    direct = propagate_with_memory(SlicePredictor(model), "direct", image, {3: box_on(3)}, min_area=1)
    result = segmenter.segment_volume(image, prompts=PromptSet({1: {3: box_on(3)}}))
    assert sorted(direct) == list(range(6))
    for z in range(6):
        clear = np.abs(direct[z]) > 0.01  # the assembler keeps float16 probabilities: skip logits within 0.01 of 0
        np.testing.assert_array_equal((result.labels[z] == 1)[clear], (direct[z] > 0)[clear])
        assert clear.mean() > 0.5
    assert (result.labels == 1).any()
    with pytest.raises(ValueError, match="method"):
        PropagationOptions(method="optical-flow")
