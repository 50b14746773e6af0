"""SSS — semi-supervised SAM: weak-to-strong consistency with an EMA teacher, DFE and PCSW prompts.

One step, for a labeled batch and an unlabeled batch (``batch["unlabeled"]``, see the trainer):

1. labeled: the supervised loss (:class:`~medsam_kit.methods.supervised.SupervisedMethod`: coarse
   Dice + CE, decoder BCE + Dice from GT box / point prompts).
2. unlabeled ``u`` (S x S crops): weak view ``w`` (random affine warp), two strong views ``s1``,
   ``s2`` of ``w`` (intensity jitter, gamma, blur, grayscale, then CutMix between samples)
   (:mod:`.views`).
3. teacher (EMA of the student, :mod:`.teacher`) on ``w``: coarse pseudo-labels + confidence
   masks (:mod:`.pseudo`); for every class with a PCSW prompt on the slice (:mod:`.pcsw_cache`),
   the decoder's pseudo-mask from that prompt, also confidence-masked.
4. student on ``s1`` and ``s2``: with ``dfe`` on, the encoder features of each strong view are
   enhanced with those of the weak view (:mod:`.dfe`; the student also encodes ``w``, in the same
   batched encoder pass) before the coarse head and the decoder; the coarse head learns the
   CutMixed pseudo-labels (masked CE + Dice), the decoder the pseudo-masks of the PCSW prompts
   (masked BCE + Dice; pixels CutMix pasted from another sample are ignored, the prompt is about
   the object of the base sample).
5. total = supervised + ``unlabeled_weight`` * ramp * mean over the two strong views of
   (``unsup_coarse_weight`` * coarse + ``unsup_decoder_weight`` * decoder).

Before optimizer step ``unlabeled_start`` a step is supervised only (steps 2-4 are skipped, so those
steps cost what a supervised step costs) and the teacher is a copy of the student; from then on the
teacher is the student's EMA and the unlabeled loss ramps up over ``rampup_steps``. Weak-to-strong
consistency only teaches something once the teacher is confident: a model trained from scratch
on one or two labeled volumes is not, for its first few hundred steps.

After every optimizer step the trainer calls :meth:`SSSMethod.after_step`, which updates the teacher.
DFE's parameters are the method's own (:meth:`SSSMethod.parameters`; the trainer optimises them
with the model's) and are saved with the teacher and the PCSW cache in :meth:`SSSMethod.state_dict`.
Validation also reports how sure the model is with the fixed confidence threshold
(:meth:`SSSMethod.validation_observer`).

Randomness: views, CutMix and the prompt subset come from generators seeded by ``(seed, micro-batch
index, stream)``; with the teacher and the PCSW cache restored from the state, a resumed run computes
the same losses as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from medsam_kit.engine.augment import AugmentParams
from medsam_kit.engine.coarse import PseudoLabelCalibration
from medsam_kit.engine.intensity import to_unit
from medsam_kit.methods.base import TrainContext, TrainingMethod
from medsam_kit.methods.sss.dfe import DFE, feature_widths
from medsam_kit.methods.sss.pcsw_cache import PcswCache, coarse_class_volume, crop_prompts
from medsam_kit.methods.sss.pseudo import (
    ClassThresholds,
    DistributionAlignment,
    MaskedCoarseLoss,
    MaskedMaskLoss,
    class_quantile_thresholds,
    coarse_pseudo_labels,
    decoder_pseudo_masks,
)
from medsam_kit.methods.sss.teacher import EMATeacher, ema_momentum
from medsam_kit.methods.sss.views import (
    CUTMIX1,
    CUTMIX2,
    PROMPTS,
    STRONG1,
    STRONG2,
    WEAK,
    StrongParams,
    apply_cutmix,
    cutmix_boxes,
    step_generator,
    strong_view,
    weak_view,
)
from medsam_kit.methods.supervised import SupervisedMethod, SupervisedParams


@dataclass
class SSSParams(SupervisedParams):
    """Keys of the config's ``method`` section for ``name: sss`` (plus every supervised key).

    The supervised keys (``coarse_weight``, ``decoder_weight``, ``dice_weight``, ``ce_weight``, box
    jitter, points, ``max_prompts``, ``seed``) configure the labeled loss as for ``supervised``;
    ``dice_weight`` / ``ce_weight`` also weigh Dice vs (B)CE in the unlabeled losses.

    Attributes:
        unlabeled_weight: weight of the unlabeled loss (UniMatch: 1, the labeled and unlabeled
            halves of the loss count alike).
        unlabeled_start: optimizer steps of supervised-only training before the unlabeled loss
            starts (the teacher copies the student until then; 0: from the first step, as UniMatch
            with a pretrained encoder). A float in ``(0, 1)`` is a share of ``train.steps`` (so a
            shorter or longer run keeps the proportion).
        rampup_steps: after ``unlabeled_start`` the unlabeled weight grows linearly over N optimizer
            steps (0: full weight at once; the confidence threshold already keeps unsure pixels out).
        unsup_coarse_weight, unsup_decoder_weight: weights of the coarse-head and decoder terms
            (``unsup_decoder_weight: 0`` skips the PCSW prompts and decoder pseudo-masks altogether).
        threshold: confidence a teacher pixel needs to supervise (UniMatch / SSS: 0.95); with
            ``threshold_mode: adaptive`` the ceiling of the per-class thresholds.
        threshold_mode: ``fixed`` (the one threshold for every class, as UniMatch), ``quantile``
            (coarse head: per class, the threshold that keeps the surest ``threshold_keep`` share of the
            pixels the teacher gives that class, within ``[threshold_floor, threshold]``;
            :func:`~medsam_kit.methods.sss.pseudo.class_quantile_thresholds`) or ``adaptive``
            (per-class running mean confidence, :class:`~medsam_kit.methods.sss.pseudo.ClassThresholds`).
            The decoder's pseudo-masks always use ``threshold``.
        threshold_keep, threshold_floor: the ``quantile`` mode's share and lowest threshold.
        threshold_momentum: EMA momentum of the adaptive thresholds (per step).
        distribution_alignment: rescale the teacher's coarse probabilities so that their running
            class proportions on unlabeled pixels match the labeled volumes' (ReMixMatch;
            :class:`~medsam_kit.methods.sss.pseudo.DistributionAlignment`), against the teacher
            teaching "background" where a class is not learned yet. Off by default (measured: a small,
            inconsistent gain; README).
        alignment_momentum: EMA momentum of the teacher's running class proportions (per step).
        ema_momentum: teacher momentum m in ``t = m t + (1 - m) s`` (UniMatch-V2: 0.996).
        ema_warmup: use ``min(m, 1 - 1/(step + 1))`` (UniMatch-V2), so the early teacher tracks
            the student instead of its random start.
        dfe: discriminative feature enhancement on the strong views (false: ablation).
        dfe_width: DFE's common width; None: the stride-16 embedding width (SSS: 256 = SAM-2's).
        pcsw_refresh: optimizer steps after which a volume's PCSW prompts are recomputed with the
            current teacher (0: never). 200 keeps the cost at one teacher pass per volume per 200
            steps while the prompts follow a teacher that improves over hundreds of steps.
        pcsw_tau, pcsw_min_voxels: PCSW continuity threshold (SSS: 0.8) and smallest object.
        pcsw_fallback: also use PCSW fallback prompts (no coherent 3D object found), on their key
            slice only.
        pcsw_max_prompts: at most this many PCSW prompts decoded per micro-batch (as ``max_prompts``).
        pcsw_min_inside: share of a mapped prompt box that must lie inside the crop, else dropped.
        pcsw_per_slice: prompt each slice with its own box and interior point of PCSW's accepted 3D
            object (default); false: the key slice's box on every slice of the accepted window
            (loose away from the key slice: see :mod:`.pcsw_cache`).
        weak_augment: overrides of the trainer's ``augment`` section for the weak view (keys of
            :class:`~medsam_kit.engine.augment.AugmentParams`); None: the same warps as the
            labeled batches (e.g. no flips for cardiac anatomy).
        strong_jitter, strong_brightness, strong_contrast, strong_gamma, strong_gamma_range,
            strong_blur, strong_blur_sigma, strong_grayscale: the strong view
            (:class:`~medsam_kit.methods.sss.views.StrongParams`: UniMatch's probabilities, a
            milder jitter for grey-level scans).
        cutmix_probability, cutmix_area: CutMix chance per sample (UniMatch: 0.5) and box area range.
    """

    unlabeled_weight: float = 1.0
    unlabeled_start: int | float = 0
    rampup_steps: int = 0
    unsup_coarse_weight: float = 1.0
    unsup_decoder_weight: float = 1.0
    threshold: float = 0.95
    threshold_mode: str = "fixed"
    threshold_keep: float = 0.5
    threshold_floor: float = 0.5
    threshold_momentum: float = 0.99
    distribution_alignment: bool = False
    alignment_momentum: float = 0.99
    ema_momentum: float = 0.996
    ema_warmup: bool = True
    dfe: bool = True
    dfe_width: int | None = None
    pcsw_refresh: int = 200
    pcsw_tau: float = 0.8
    pcsw_min_voxels: int = 10
    pcsw_fallback: bool = False
    pcsw_max_prompts: int = 16
    pcsw_min_inside: float = 0.5
    pcsw_per_slice: bool = True
    weak_augment: dict | None = None
    strong_jitter: float = 0.8
    strong_brightness: float = 0.4
    strong_contrast: float = 0.4
    strong_gamma: float = 0.5
    strong_gamma_range: list = field(default_factory=lambda: [0.7, 1.5])
    strong_blur: float = 0.5
    strong_blur_sigma: list = field(default_factory=lambda: [0.1, 2.0])
    strong_grayscale: float = 0.2
    cutmix_probability: float = 0.5
    cutmix_area: list = field(default_factory=lambda: [0.02, 0.4])

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"method.threshold must be in [0, 1], got {self.threshold}")
        if self.threshold_mode not in ("fixed", "quantile", "adaptive"):
            raise ValueError("method.threshold_mode must be 'fixed', 'quantile' or 'adaptive', "
                             f"got {self.threshold_mode!r}")
        if self.threshold_mode == "quantile" and (not 0.0 < self.threshold_keep <= 1.0
                                                  or not 0.0 <= self.threshold_floor <= self.threshold):
            raise ValueError("method.threshold_keep must be in (0, 1] and threshold_floor in [0, threshold], got "
                             f"{self.threshold_keep} and {self.threshold_floor}")
        if not 0.0 <= self.alignment_momentum < 1.0:
            raise ValueError(f"method.alignment_momentum must be in [0, 1), got {self.alignment_momentum}")
        if not 0.0 <= self.threshold_momentum < 1.0:
            raise ValueError(f"method.threshold_momentum must be in [0, 1), got {self.threshold_momentum}")
        if not 0.0 <= self.ema_momentum <= 1.0:
            raise ValueError(f"method.ema_momentum must be in [0, 1], got {self.ema_momentum}")
        if isinstance(self.unlabeled_start, float) and not 0.0 <= self.unlabeled_start < 1.0:
            raise ValueError("method.unlabeled_start must be a step count (int) or a share of train.steps in "
                             f"[0, 1), got {self.unlabeled_start}")
        if min(self.unlabeled_start, self.rampup_steps, self.pcsw_refresh) < 0 or self.pcsw_max_prompts < 1:
            raise ValueError("method.unlabeled_start, rampup_steps and pcsw_refresh must be >= 0, "
                             "pcsw_max_prompts >= 1")
        self.strong()  # checks the ranges now, with the config, not at the first step

    def supervised(self) -> SupervisedParams:
        """The labeled-loss part."""
        return SupervisedParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SupervisedParams)})

    def strong(self) -> StrongParams:
        return StrongParams(
            jitter=self.strong_jitter, brightness=self.strong_brightness, contrast=self.strong_contrast,
            gamma=self.strong_gamma, gamma_range=tuple(self.strong_gamma_range), blur=self.strong_blur,
            blur_sigma=tuple(self.strong_blur_sigma), grayscale=self.strong_grayscale,
            cutmix=self.cutmix_probability, cutmix_area=tuple(self.cutmix_area),
        )

    def weak(self, base: AugmentParams) -> AugmentParams:
        """The weak view's warp: ``base`` (the trainer's) with ``weak_augment`` overrides."""
        values = dataclasses.asdict(base)
        overrides = dict(self.weak_augment or {})
        unknown = sorted(set(overrides) - set(values))
        if unknown:
            raise ValueError(f"unknown method.weak_augment key(s) {unknown}; known: {sorted(values)}")
        values.update(overrides)
        values["scale"] = tuple(float(v) for v in values["scale"])
        return AugmentParams(**values)


def _class_counts(context: TrainContext, num_classes: int) -> torch.Tensor:
    """``(K + 1,)`` voxel counts of each class over the labeled training volumes (``context.train_cases``)."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for case in context.train_cases:
        classes = context.label_lut[torch.from_numpy(np.array(case.label, dtype=np.int64))]
        counts += torch.bincount(classes.reshape(-1), minlength=num_classes)[:num_classes].double()
    return counts


class PseudoLabelReport(PseudoLabelCalibration):
    """Validation observer: share of the validation pixels the model is ``threshold`` sure of, and of those
    the share it labels right (``val_pseudo_coverage`` / ``val_pseudo_precision``)."""

    def __init__(self, num_classes: int, threshold: float) -> None:
        super().__init__(num_classes)
        self.threshold = threshold

    def logs(self) -> dict[str, float | None]:
        kept = self.summary([self.threshold])[f"{float(self.threshold):g}"]
        return {"val_pseudo_coverage": kept["coverage"], "val_pseudo_precision": kept["precision"]}


class SSSMethod(TrainingMethod):
    """Strategy object for the Trainer (module docstring); call :meth:`setup` before :meth:`loss`."""

    name = "sss"
    needs_unlabeled = True

    def __init__(self, params: SSSParams | None = None) -> None:
        self.params = params or SSSParams()
        p = self.params
        self.supervised = SupervisedMethod(p.supervised())
        self.strong_params = p.strong()
        self.coarse_loss = MaskedCoarseLoss(p.dice_weight, p.ce_weight)
        self.mask_loss = MaskedMaskLoss(p.dice_weight, p.ce_weight)
        self.teacher: EMATeacher | None = None
        self.dfe: DFE | None = None
        self.pcsw: PcswCache | None = None
        self.class_thresholds: ClassThresholds | None = None
        self.alignment: DistributionAlignment | None = None
        self.grad_accumulation = 1
        self.unlabeled_start = 0  # optimizer steps; resolved from params (a share of train.steps) in setup()
        self.rank, self.world_size = 0, 1  # this process's share of the global unlabeled batch (setup)

    # ------------------------------------------------------------------ setup
    def setup(self, context: TrainContext) -> None:
        """Build teacher, DFE and the PCSW cache.

        Uses the context's ``model``, ``unlabeled_cases`` (cases with ``case_id`` and ``image``
        ``(C, Z, Y, X)`` preprocessed), ``intensity``, ``augment`` (its ``params`` and ``pad_value``),
        ``steps``, ``grad_accumulation``, ``val_batch_size``, ``amp`` / ``amp_dtype``, ``rank`` /
        ``world_size`` and, with ``distribution_alignment``, ``train_cases`` / ``label_lut``.
        """
        p = self.params
        model = context.model
        device = next(model.parameters()).device
        self.rank, self.world_size = int(context.rank), int(context.world_size)
        self.teacher = EMATeacher(model)
        if p.threshold_mode == "adaptive":
            self.class_thresholds = ClassThresholds(int(model.num_classes) + 1, p.threshold, p.threshold_momentum)
        if p.distribution_alignment:
            self.alignment = DistributionAlignment(_class_counts(context, int(model.num_classes) + 1),
                                                   p.alignment_momentum)
        self.weak_params = p.weak(context.augment.params)
        self.pad_value = float(context.augment.pad_value)
        self.grad_accumulation = int(context.grad_accumulation)
        start = p.unlabeled_start
        self.unlabeled_start = int(start) if isinstance(start, int) else round(float(start) * int(context.steps))
        intensity = context.intensity
        cases = context.unlabeled_cases
        by_id = None if hasattr(cases, "case") else {c.case_id: c for c in cases}
        autocast = (lambda: torch.autocast(device.type, dtype=context.amp_dtype)) if context.amp else None
        val_batch_size = int(context.val_batch_size)

        def coarse_volume(case_id: str):
            case = cases.case(case_id) if by_id is None else by_id[case_id]
            image = torch.as_tensor(to_unit(case.image, intensity))
            return coarse_class_volume(self.teacher.model, image, val_batch_size, self.pad_value, autocast)

        self.pcsw = PcswCache(coarse_volume, model.num_classes, p.pcsw_refresh, p.pcsw_tau, p.pcsw_min_voxels,
                              p.pcsw_fallback)
        if p.dfe:
            with torch.no_grad():  # read the feature widths (SAM-2: 3 scales, SAM-1: 1) from the encoder
                probe = self.teacher.model.encode(torch.zeros(1, model.in_channels, model.image_size,
                                                              model.image_size, device=device))
            self.dfe = DFE(feature_widths(probe), p.dfe_width or model.embed_dim).to(device)

    def validation_observer(self, num_classes: int) -> PseudoLabelReport | None:
        """With the fixed threshold (not the per-class modes): validation reports how many validation pixels
        the model is that sure of and how many of those are right (:class:`PseudoLabelReport`)."""
        return PseudoLabelReport(num_classes, self.params.threshold) if self.params.threshold_mode == "fixed" else None

    def parameters(self) -> list[torch.nn.Parameter]:
        """Trainable parameters of the method itself (DFE), to optimise with the model's."""
        return list(self.dfe.parameters()) if self.dfe is not None else []

    # ------------------------------------------------------------------ loss
    def loss(self, model, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss of one micro-batch.

        Args:
            model: the student :class:`~medsam_kit.models.SegmenterModel` (the one given to setup).
            batch: ``image`` ``(B, C, S, S)`` / ``label`` ``(B, S, S)`` (labeled, augmented) and
                ``unlabeled``: ``{"image": (Bu, C, S, S) in [0, 1], "case_id": [str], "patch_origin":
                (Bu, 3) (z, y, x)}``, all on the model's device.
            step: micro-batch index since the start of training (seeds the views and prompts).

        Returns:
            ``(loss, logs)``: logs ``loss``, ``sup_loss`` (and the supervised ``coarse_loss``,
            ``decoder_loss``, ``prompts``), ``unsup_loss``, ``unsup_coarse_loss``,
            ``unsup_decoder_loss``, ``unlabeled_weight``, ``conf_ratio`` (share of confident teacher
            pixels), ``pcsw_prompts`` (PCSW prompts decoded), ``dfe_similarity`` (with DFE).
        """
        if self.teacher is None:
            raise RuntimeError("SSSMethod.setup(context) must run before loss(): it builds the EMA teacher")
        unlabeled = batch.get("unlabeled")
        if unlabeled is None:
            raise ValueError("the SSS method needs batch['unlabeled'] (the trainer's unlabeled stream over the "
                             "split's train_unlabeled cases)")
        p = self.params
        sup, sup_logs = self.supervised.loss(model, {"image": batch["image"], "label": batch["label"]}, step)
        opt_step = int(step) // self.grad_accumulation
        since = opt_step - self.unlabeled_start  # optimizer steps of the unlabeled phase before this one
        if since < 0 or p.unlabeled_weight == 0:
            logs = {"sup_loss": sup_logs.pop("loss"), **sup_logs, "unlabeled_weight": 0.0,
                    "loss": float(sup.detach())}
            return sup, logs
        ramp = 1.0 if p.rampup_steps == 0 else min(1.0, (since + 1) / p.rampup_steps)
        weight = p.unlabeled_weight * ramp
        unsup, logs = self.unlabeled_loss(model, unlabeled, int(step), opt_step)
        total = sup + weight * unsup
        logs.update({"sup_loss": sup_logs.pop("loss"), **sup_logs, "unsup_loss": float(unsup.detach()),
                     "unlabeled_weight": weight, "loss": float(total.detach())})
        return total, logs

    def unlabeled_loss(self, model, unlabeled: dict, step: int, opt_step: int) -> tuple[torch.Tensor, dict]:
        """Unlabeled part of the loss (steps 2-4 of the module docstring) and its logs."""
        p = self.params
        images = unlabeled["image"]
        batch = images.shape[0]
        size = (images.shape[-2], images.shape[-1])
        total, offset = batch * self.world_size, batch * self.rank  # this rank's rows of the global batch
        gen = lambda stream: step_generator(p.seed, step, stream)  # noqa: E731
        weak, matrices = weak_view(images, self.weak_params, gen(WEAK), self.pad_value, total, offset)

        teacher = self.teacher.model
        with torch.no_grad():
            t_features = teacher.encode(weak)
            t_logits = teacher.coarse_logits(t_features)
            if self.alignment is not None:  # softmax(log q) = q: the aligned probabilities as logits
                t_logits = torch.log(self.alignment(torch.softmax(t_logits.float(), dim=1)).clamp(min=1e-12))
            labels, confidence, confident = coarse_pseudo_labels(t_logits, p.threshold)
            if self.class_thresholds is not None:
                self.class_thresholds.update(confidence, labels)
                confident = self.class_thresholds.confident(confidence, labels)
            elif p.threshold_mode == "quantile":
                class_thr = class_quantile_thresholds(confidence, labels, int(model.num_classes) + 1,
                                                      p.threshold_keep, p.threshold_floor, p.threshold)
                confident = confidence >= class_thr[labels]
            # no decoder term: no PCSW prompts, no teacher / student decoding of them
            prompts = (self._prompts(unlabeled, matrices, model.image_size, opt_step, gen(PROMPTS))
                       if p.unsup_decoder_weight else None)
            if prompts is not None:
                index, _, boxes, points, point_labels = prompts
                t_out = teacher.decode(t_features.select(index), boxes=boxes, points=points,
                                       point_labels=point_labels)
                targets, target_conf = decoder_pseudo_masks(t_out.mask_logits[:, :1], p.threshold)

        strong = [strong_view(weak, self.strong_params, gen(s), total, offset) for s in (STRONG1, STRONG2)]
        mixes = [cutmix_boxes(batch, size, self.strong_params, gen(c), total, offset) for c in (CUTMIX1, CUTMIX2)]
        strong = [apply_cutmix(s, *mix) for s, mix in zip(strong, mixes, strict=True)]
        if self.dfe is not None:
            features = model.encode(torch.cat([weak, *strong]))
            weak_features = features.select(slice(0, batch))
            views = [self.dfe(weak_features, features.select(slice(batch * (i + 1), batch * (i + 2))))
                     for i in range(2)]
        else:
            features = model.encode(torch.cat(strong))
            views = [features.select(slice(batch * i, batch * (i + 1))) for i in range(2)]

        coarse_terms, decoder_terms = [], []
        for view, (region, partner) in zip(views, mixes, strict=True):
            coarse_terms.append(self.coarse_loss(model.coarse_logits(view), apply_cutmix(labels, region, partner),
                                                 apply_cutmix(confident, region, partner)))
            if prompts is not None:
                out = model.decode(view.select(index), boxes=boxes, points=points, point_labels=point_labels)
                keep = target_conf & ~region.to(target_conf.device)[index]  # pasted pixels: another image
                decoder_terms.append(self.mask_loss(out.mask_logits[:, :1], targets, keep))
        coarse = 0.5 * (coarse_terms[0] + coarse_terms[1])
        decoder = 0.5 * (decoder_terms[0] + decoder_terms[1]) if decoder_terms else coarse.new_zeros(())
        unsup = p.unsup_coarse_weight * coarse + p.unsup_decoder_weight * decoder
        if p.threshold_mode == "quantile":
            thresholds = class_thr.tolist()
        elif self.class_thresholds is not None:
            thresholds = self.class_thresholds.thresholds().tolist()
        else:
            thresholds = []
        logs = {
            "unsup_coarse_loss": float(coarse.detach()),
            "unsup_decoder_loss": float(decoder.detach()),
            "conf_ratio": float(confident.float().mean()),
            **{f"threshold_{k}": float(v) for k, v in enumerate(thresholds)},
            "pcsw_prompts": float(0 if prompts is None else len(prompts[0])),
        }
        if self.dfe is not None:
            logs["dfe_similarity"] = float(self.dfe.last_similarity.mean())
        return unsup, logs

    def _prompts(self, unlabeled: dict, matrices: torch.Tensor, image_size: int, opt_step: int,
                 generator: torch.Generator):
        """PCSW decoder prompts of the weak views, on the device, at most ``pcsw_max_prompts``."""
        volume_prompts = [self.pcsw.prompts(str(cid), opt_step) for cid in unlabeled["case_id"]]
        prompts = crop_prompts(volume_prompts, unlabeled["patch_origin"], matrices, image_size,
                               self.params.pcsw_min_inside, self.params.pcsw_per_slice)
        if prompts is None:
            return None
        if len(prompts[0]) > self.params.pcsw_max_prompts:
            keep = torch.randperm(len(prompts[0]), generator=generator)[:self.params.pcsw_max_prompts].sort().values
            prompts = tuple(t[keep] for t in prompts)
        device = unlabeled["image"].device
        return tuple(t.to(device) for t in prompts)

    # ------------------------------------------------------------------ after the optimizer step
    def after_step(self, model, step: int) -> None:
        """Teacher update after optimizer step ``step`` (1-based): a copy of the student up to
        ``unlabeled_start``, its EMA after (the momentum warm-up counted from ``unlabeled_start``)."""
        if self.teacher is None:
            raise RuntimeError("SSSMethod.setup(context) must run before after_step()")
        p = self.params
        since = int(step) - self.unlabeled_start
        momentum = 0.0 if since <= 0 else ema_momentum(p.ema_momentum, since, p.ema_warmup)
        self.teacher.update(model, momentum)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Teacher weights, DFE weights (CPU tensors) and the PCSW cache; empty before setup."""
        if self.teacher is None:
            return {}
        state = {"teacher": self.teacher.state_dict(), "pcsw": self.pcsw.state_dict()}
        if self.class_thresholds is not None:
            state["class_thresholds"] = self.class_thresholds.state_dict()
        if self.alignment is not None:
            state["alignment"] = self.alignment.state_dict()
        if self.dfe is not None:
            state["dfe"] = {k: v.detach().cpu().clone() for k, v in self.dfe.state_dict().items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (after :meth:`setup`); an empty state (fresh start) changes nothing."""
        if not state:
            return
        if self.teacher is None:
            raise RuntimeError("SSSMethod.setup(context) must run before load_state_dict()")
        self.teacher.load_state_dict(state["teacher"])
        self.pcsw.load_state_dict(state.get("pcsw", {}))
        if self.class_thresholds is not None:
            self.class_thresholds.load_state_dict(state.get("class_thresholds", {}))
        if self.alignment is not None:
            self.alignment.load_state_dict(state.get("alignment", {}))
        if self.dfe is not None:
            if "dfe" not in state:
                raise ValueError("the saved SSS state has no DFE weights (saved with dfe: false); resume with "
                                 "method.dfe: false or start a new run")
            self.dfe.load_state_dict(state["dfe"])
