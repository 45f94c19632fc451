"""The dynamic stage: deformable Gaussians fitted to a driving video + novel views.

One step (after DreamGaussian4D's ``main_4d.py``, restructured for speed):

1. pick a batch of reference images (frames of the driving video, or any
   posed images with times);
2. query the deformation field (``deform.model``: a HexPlane by default) once
   for all their times -> deformed Gaussians [B, N];
3. ask the novel-view term for V extra cameras per reference image;
4. render all B x (1 + V) views in **one** rasteriser call, or two while the
   novel views step through their own resolutions (128 -> 256 -> 512 px, as
   the original; it made one call per view: 70 per step with ``4d.yaml``);
5. reference RGB + alpha losses (10000 / 1000, ramped by progress, as the
   original), the novel-view term (not ramped, its mean over the novel
   renders, as the original's SDS / (batch_size * n_views)), and
   the field's regularisers when their weights are > 0 (the original defines
   them and never calls them);
6. one Adam step over Gaussians and field; densify/prune on schedule.

An optional static warm-up (``static_iters``) first fits the Gaussians alone
at the first frame (or all frames, 4DGaussians' "coarse" phase) with the field
switched off.

People can edit the result (:class:`~text4d.stages.base.MotionEditing`): retime
the output clip (any field) and, with ``deform.model: control_points``, drag the
control points into new poses kept as keyframes. Both are part of the stage's
state; training keeps fitting model time (the data's own times) and, while
keyframes exist, adds ``lambda_edit`` times their constraint
(:meth:`~text4d.gaussians.fields.EditableField.edit_loss`) to the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch
from torch import Tensor

from text4d.accel.cuda_graphs import GraphCache
from text4d.clip_score import ClipSimilarity
from text4d.errors import ConfigError
from text4d.gaussians.deform import DeformConfig, make_field
from text4d.gaussians.fields import EditableField
from text4d.gaussians.model import GaussianModel, LearningRates, exp_decay
from text4d.gaussians.motion_edit import PoseDrag, PoseLayer
from text4d.gaussians.strategy import DensifyConfig, DensifyStrategy
from text4d.io.ply import PlyGaussians
from text4d.lpips import LPIPS
from text4d.metrics import score, ssim
from text4d.render.camera import Cameras
from text4d.render.splat import Backend, RenderOutput, Splats, render, resolve_backend
from text4d.stages.base import GaussianStage, Keyframe, MotionEditing, stepped_resolution, total_loss
from text4d.stages.novel import NovelViewTerm
from text4d.timing import Retime
from text4d.views import Views


@dataclass
class DynamicConfig:
    """Dynamic-stage knobs. Defaults follow DreamGaussian4D's ``4d.yaml``.

    Every field is live-editable from the viewer; the stage reads them each step.
    """

    iters: int = field(default=500, metadata={"min": 0})
    static_iters: int = field(default=0, metadata={"min": 0, "help": "static warm-up steps before the field trains"})
    static_frames: Literal["first", "all"] = "first"
    ref_size: int = field(default=256, metadata={"min": 8, "max": 4096, "help": "render resolution of every training view"})
    batch_size: int = field(default=14, metadata={"min": 1, "help": "reference images per step"})
    n_views: int = field(default=4, metadata={"min": 0, "help": "novel views per reference image"})
    resolution_milestones: list[float] = field(default_factory=lambda: [0.3, 0.6], metadata={"help": "progress at which novel views step to the next resolution"})
    resolutions: list[int] = field(default_factory=lambda: [128, 256, 512], metadata={"help": "novel-view render size per phase; [] = ref_size"})
    lambda_rgb: float = field(default=10000.0, metadata={"min": 0.0})
    lambda_alpha: float = field(default=1000.0, metadata={"min": 0.0})
    lambda_novel: float = field(default=1.0, metadata={"min": 0.0})
    lambda_tv: float = field(default=0.0, metadata={"min": 0.0, "help": "space-plane total variation"})
    lambda_time: float = field(default=0.0, metadata={"min": 0.0, "help": "time smoothness of the field"})
    lambda_time_l1: float = field(default=0.0, metadata={"min": 0.0, "help": "sparsity of motion"})
    lambda_arap: float = field(default=0.0, metadata={"min": 0.0, "help": "as-rigid-as-possible motion of the control points (deform.model=control_points)"})
    lambda_edit: float = field(default=10000.0, metadata={
        "min": 0.0, "help": "how firmly pose edits (keyframes) hold against the data when training resumes (as lambda_rgb: they hold); 0 = the data wins"})
    rgb_loss: Literal["mse", "l1"] = field(default="mse", metadata={"help": "photometric term of the reference loss"})
    lambda_dssim: float = field(default=0.0, metadata={
        "min": 0.0, "max": 1.0, "help": "fraction of the reference RGB loss that is D-SSIM (0.2 in 3DGS), the rest the photometric term"})
    ramp_reference: bool = field(default=True, metadata={"help": "scale reference losses by training progress (as the original)"})
    bg: Literal["white", "black", "random"] = field(default="white", metadata={"help": "white as 4d.yaml (invert_bg_prob 0: main_4d renders every view on white)"})
    train_gaussians: bool = field(default=True, metadata={"help": "False = frozen static model (the paper's setting)"})
    train_motion: bool = field(default=True, metadata={"help": "False = freeze the motion: the deformation and its pose edits stay as they are while the Gaussians train on"})
    lr: LearningRates = field(default_factory=LearningRates)
    lr_deform: float = field(default=6.4e-4, metadata={"min": 0.0})
    lr_grid: float = field(default=6.4e-3, metadata={"min": 0.0})
    lr_field_decay: float = field(default=1.0, metadata={
        "min": 0.0, "max": 1.0,
        "help": "deformation and grid lr at the end of the dynamic phase, as a fraction of lr_deform / lr_grid (log-linear); 1 = constant, as DreamGaussian4D"})
    deform: DeformConfig = field(default_factory=DeformConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    init_points: int = field(default=5000, metadata={"min": 1, "help": "random Gaussians when no static model is given"})
    init_radius: float = field(default=0.5, metadata={"min": 0.0})
    sh_degree: int = field(default=0, metadata={"min": 0, "max": 3})
    backend: Backend = "auto"
    cuda_graph: bool = field(default=True, metadata={"help": "replay no-grad deformation queries (viewer, evaluation) as one CUDA graph"})
    seed: int = 0

    @classmethod
    def of(cls, cfg: DynamicConfig) -> DynamicConfig:
        """The stage's own knobs out of a larger run config (what the studios let users edit)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


class DynamicStage(GaussianStage, MotionEditing):
    """Fit a deformable Gaussian model to posed reference images over time."""

    name = "dynamic"

    def __init__(
        self,
        cfg: DynamicConfig,
        reference: Views,
        novel: NovelViewTerm | None = None,
        init: GaussianModel | None = None,
        test: Views | None = None,
        device: str | torch.device = "cpu",
        lpips: LPIPS | None = None,
        clip: ClipSimilarity | None = None,
    ):
        self.cfg = cfg
        self.device = torch.device(device)
        resolve_backend(cfg.backend, self.device)  # a backend that cannot run here fails now, not in the first step
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.reference = reference.to(self.device)
        self.novel = novel
        self.test = test.to(self.device) if test is not None else None
        self.lpips = lpips.to(self.device) if lpips is not None else None  # scores held-out views too when given
        self.clip = clip.to(self.device) if clip is not None else None  # CLIP similarity on held-out views when given
        self.frame_times = torch.unique(self.reference.times.cpu())  # sorted distinct times
        self.num_frames = len(self.frame_times)
        model = init if init is not None else GaussianModel.random_ball(cfg.init_points, cfg.init_radius, cfg.sh_degree, self.generator)
        self.model = model.to(self.device)
        with torch.random.fork_rng(devices=[]):  # the field's initial planes depend on cfg.seed only
            torch.manual_seed(cfg.seed)
            self.field = make_field(cfg.deform).to(self.device)
        unused = [name for name, weight in self._regulariser_weights().items() if weight > 0 and name not in self.field.regularisers]
        if unused:
            used = ", ".join(self.field.regularisers) or "none"
            raise ConfigError(f"lambda_{unused[0]} has no effect on deform.model={cfg.deform.model} (its regularisers: {used}); set lambda_{unused[0]}=0")
        self.iteration = 0
        self.retiming = Retime()
        self.strategy = DensifyStrategy(cfg.densify, extent=self._scene_extent(), generator=self.generator)
        self.optimizer = self._make_optimizer()
        self._ref_cache: tuple[int, Views] | None = None
        self._deform_graphs = GraphCache(self._deform) if self.device.type == "cuda" else None

    # -- setup -------------------------------------------------------------------
    @property
    def iters(self) -> int:
        return self.cfg.static_iters + self.cfg.iters

    @property
    def phase(self) -> Literal["static", "dynamic"]:
        return "static" if self.iteration < self.cfg.static_iters else "dynamic"

    def _scene_extent(self) -> float:
        centers = self.reference.cameras.centers
        return float(1.1 * (centers - centers.mean(0)).norm(dim=-1).max().clamp_min(centers.norm(dim=-1).max() * 0.5))

    def _make_optimizer(self) -> torch.optim.Optimizer:
        groups = self.model.param_groups(self.cfg.lr)
        groups += [{"name": name, "params": params, "lr": 0.0} for name, params in self.field.param_groups().items()]
        fused = self.device.type == "cuda"
        return torch.optim.Adam(groups, lr=0.0, eps=1e-15, fused=fused)

    def _apply_learning_rates(self) -> None:
        cfg = self.cfg
        step = self.iteration + 1  # the original's update_learning_rate(step), step from 1
        progress = step / max(self.iters, 1)
        self.model.apply_learning_rates(self.optimizer, cfg.lr, progress)
        static = self.phase == "static"
        dynamic_progress = (step - cfg.static_iters) / max(cfg.iters, 1)
        field_lrs = self.field.learning_rates(cfg.lr_deform, cfg.lr_grid)
        for group in self.optimizer.param_groups:
            if group["name"] in field_lrs:
                base = field_lrs[group["name"]]
                group["lr"] = 0.0 if static or not cfg.train_motion else exp_decay(base, base * cfg.lr_field_decay, dynamic_progress)
            elif not cfg.train_gaussians and not static:
                group["lr"] = 0.0

    def _reference_at(self, size: int) -> Views:
        """Reference views resized to the training resolution (cached until ``ref_size`` changes)."""
        if self._ref_cache is None or self._ref_cache[0] != size:
            self._ref_cache = (size, self.reference.resized(size, size))
        return self._ref_cache[1]

    # -- deformation ---------------------------------------------------------------
    def deformed(self, t: Tensor, layer: PoseLayer | None = None) -> Splats:
        """Gaussians deformed to times ``t`` [T] -> Splats with leading dim T (``layer``: a drag being previewed)."""
        m = self.model
        n_t = t.shape[0]
        if self.phase == "static" or not self.field.ready:  # the field is untrained (the identity): skip it
            expand = lambda x: x.unsqueeze(0).expand(n_t, *x.shape)  # noqa: E731
            return Splats(expand(m.means), expand(m.quats), expand(m.scales), expand(m.opacities), expand(m.sh))
        dynamic = (t, *layer.tensors()) if layer is not None else (t,)
        if self._deform_graphs is not None and self.cfg.cuda_graph and not torch.is_grad_enabled():
            # Buffers too: keyframes are buffers, replaced (new storage) by every edit.
            fixed = (m.means, m.quats, m.log_scales, m.opacity_logits, m.sh_dc, m.sh_rest, *self.field.parameters(), *self.field.buffers())
            means, quats, scales, opacities, sh = self._deform_graphs(dynamic, fixed)
        else:
            means, quats, scales, opacities, sh = self._deform(*dynamic)
        return Splats(means, quats, scales, opacities.unsqueeze(0).expand(n_t, -1), sh.unsqueeze(0).expand(n_t, -1, -1, -1))

    def _shared_in_copies(self) -> tuple[Any, ...]:
        return (self.novel, self.reference, self.test, self.lpips, self.clip, self.optimizer, self._ref_cache)

    def _deform(self, t: Tensor, *layer: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Deformed means, quaternions, scales [T, N, ·] at times ``t``, and the opacities [N] and SH [N, K, 3].

        ``layer``: the tensors of a previewed drag (:meth:`PoseLayer.tensors`), on an editable field.
        """
        m = self.model
        if layer:
            assert isinstance(self.field, EditableField)
            means, quats, log_scales = self.field.deform(m.means, m.quats, m.log_scales, t, PoseLayer(*layer))
        else:
            means, quats, log_scales = self.field.deform(m.means, m.quats, m.log_scales, t)
        return means, quats, torch.exp(log_scales), m.opacities, m.sh

    def deformed_raw(self, t: float) -> PlyGaussians:
        """Raw parameters of the Gaussians at time ``t``, for ``.ply`` export."""
        with torch.no_grad():
            m = self.model
            raw = m.to_ply()
            if self.field.ready:
                means, quats, log_scales = self.field.deform(m.means, m.quats, m.log_scales, torch.tensor([t], device=self.device))
                raw.means, raw.quats, raw.log_scales = (x[0].cpu().numpy() for x in (means, quats, log_scales))
        return raw

    # -- Stage API ----------------------------------------------------------------------
    def _background(self) -> Tensor:
        choice = self.cfg.bg
        if choice == "random":
            choice = "white" if torch.rand((), generator=self.generator).item() < 0.5 else "black"
        return torch.full((3,), 1.0 if choice == "white" else 0.0, device=self.device)

    def _batch(self) -> Tensor:
        """Indices of this step's reference images."""
        ref = self.reference
        if self.phase == "static" and self.cfg.static_frames == "first":
            pool = torch.nonzero(ref.times.cpu() == self.frame_times[0]).flatten()
        else:
            pool = torch.arange(len(ref))
        pick = torch.randperm(len(pool), generator=self.generator)[: self.cfg.batch_size]
        return pool[pick]

    def _regulariser_weights(self) -> dict[str, float]:
        cfg = self.cfg
        return {"tv": cfg.lambda_tv, "time": cfg.lambda_time, "time_l1": cfg.lambda_time_l1, "arap": cfg.lambda_arap}

    def _rgb_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """The reference RGB loss [B, H, W, 3]: MSE or L1, and the D-SSIM fraction ``lambda_dssim``."""
        cfg = self.cfg
        photometric = (pred - target).square().mean() if cfg.rgb_loss == "mse" else (pred - target).abs().mean()
        if cfg.lambda_dssim <= 0:
            return photometric
        return (1.0 - cfg.lambda_dssim) * photometric + cfg.lambda_dssim * (1.0 - ssim(pred, target).mean())

    def step(self) -> dict[str, float]:
        cfg = self.cfg
        if self.phase == "dynamic":
            self.field.prepare(self.model.means)
        self._apply_learning_rates()
        ref = self._reference_at(cfg.ref_size)
        idx = self._batch()
        batch = ref[idx.to(self.device)]
        bg = self._background()
        progress = (self.iteration + 1) / max(self.iters, 1)
        views = [batch.cameras.reshape(len(batch), 1)]  # [B, 1], then [B, V] novel cameras
        novel = self.novel if cfg.n_views > 0 and cfg.lambda_novel > 0 else None
        if novel is not None:
            novel_cams = novel.cameras(batch.times.cpu(), batch.cameras, self.generator).to(self.device)
            size = stepped_resolution(progress, cfg.resolution_milestones, cfg.resolutions, novel_cams.width)
            views.append(novel_cams.resized(size, size) if (size, size) != (novel_cams.width, novel_cams.height) else novel_cams)
        splats = self.deformed(batch.times)
        outs = self._render_views(splats, views, bg)
        screen = [o.means2d for o, _ in outs if o.means2d is not None and o.means2d.requires_grad]
        track = self.strategy.active(self.iteration + 1) and len(screen) == len(outs)
        if track:
            for means2d in screen:
                means2d.retain_grad()

        ramp = progress if cfg.ramp_reference else 1.0
        target = batch.composite(bg)
        ref_out = outs[0][0]
        terms: dict[str, Tensor] = {
            "rgb": cfg.lambda_rgb * ramp * self._rgb_loss(ref_out.rgb[:, 0], target),
            "alpha": cfg.lambda_alpha * ramp * (ref_out.alpha[:, 0] - batch.alpha).square().mean(),
        }
        if novel is not None:
            out, v = outs[-1][0], views[1].viewmats.shape[1]
            novel_out = RenderOutput(out.rgb[:, -v:], out.alpha[:, -v:], None)
            terms["novel"] = cfg.lambda_novel * novel.loss(novel_out, bg, progress)
        if self.phase == "dynamic":
            terms.update(self.field.losses(self._regulariser_weights(), self.model.means, batch.times, self.generator))
            if isinstance(self.field, EditableField) and self.field.edits.count and cfg.lambda_edit > 0:
                terms["edit"] = cfg.lambda_edit * self.field.edit_loss(self.generator)
        loss = total_loss(terms)
        loss.backward()
        if track:  # the screen-space gradients exist only where retain_grad asked for them
            grads = [m.grad for m in screen if m.grad is not None]
            if len(grads) == len(outs):
                self._accumulate_densify_stats(grads, outs, cfg.lambda_rgb * ramp)
        return self.finish_step(terms, loss)

    def _render_views(self, splats: Splats, views: list[Cameras], bg: Tensor) -> list[tuple[RenderOutput, Cameras]]:
        """Render camera sets [B, C_i] of deformed Gaussians [B, N]: one rasteriser call when they
        share a size (reference and novel views side by side), else one call per size."""
        if len(views) == 2 and (views[0].width, views[0].height) == (views[1].width, views[1].height):
            views = [Cameras(torch.cat([c.viewmats for c in views], 1), torch.cat([c.Ks for c in views], 1), views[0].width, views[0].height)]
        return [(render(splats, cams, bg, backend=self.cfg.backend, sh_degree=self.model.sh_degree, depth=False), cams)
                for cams in views]

    def _accumulate_densify_stats(self, grads: list[Tensor], outs: list[tuple[RenderOutput, Cameras]], loss_scale: float) -> None:
        """Per-Gaussian view-space gradient norm in 3DGS NDC units, per view, from the gradients of
        each render's ``means2d`` ([B, C, N, 2] pixels).

        The losses are means over all B x C images, so each view's gradient is
        multiplied back by the number of images (as gsplat's strategy does),
        and divided by the reference RGB weight (with its ramp) so the densify
        threshold keeps its meaning when loss weights are edited or ramped.
        """
        images = sum(grad.shape[0] * grad.shape[1] for grad in grads)
        norms, visible = [], []
        for grad, (out, cams) in zip(grads, outs):
            half = torch.tensor([cams.width / 2.0, cams.height / 2.0], device=grad.device)
            scale = half * images / (loss_scale if loss_scale > 0 else 1.0)
            norms.append((grad * scale).norm(dim=-1).flatten(0, -2))  # [B*C, N]
            visible.append((out.radii > 0).flatten(0, -2) if out.radii is not None else norms[-1] > 0)
        self.strategy.update(torch.cat(norms), torch.cat(visible))

    @torch.no_grad()
    def render(self, cameras: Cameras, t: float | Tensor, bg: Tensor | None = None, layer: PoseLayer | None = None) -> RenderOutput:
        """Render at model time ``t``; ``layer``: a drag the studio previews (nothing is kept)."""
        t = torch.as_tensor(t, dtype=torch.float32, device=self.device).reshape(1)
        cameras = cameras.to(self.device)
        splats = self.deformed(t, layer)
        squeeze = lambda x: x.squeeze(0)  # noqa: E731
        splats = Splats(*(squeeze(x) for x in (splats.means, splats.quats, splats.scales, splats.opacities, splats.sh)))
        bg = torch.ones(3, device=self.device) if bg is None else bg.to(self.device)
        return render(splats, cameras, bg, backend=self.cfg.backend, sh_degree=self.model.sh_degree)

    @torch.no_grad()
    def gaussian_centers(self, t: float) -> Tensor:
        m = self.model
        if not self.field.ready:
            return m.means.detach().clone()
        return self.field.deform(m.means, m.quats, m.log_scales, torch.tensor([t], device=self.device))[0][0]

    def ground_truth(self) -> Views | None:
        return self.test

    def clip_times(self) -> list[float]:
        return self.retiming.times(self.num_frames)

    # -- motion editing (MotionEditing) ------------------------------------------------------
    def why_not_posable(self) -> str | None:
        if not isinstance(self.field, EditableField):
            return f"deform.model={self.cfg.deform.model} has no control points to drag; fit with deform.model=control_points to edit poses"
        if not self.field.ready:
            return f"the control points are placed at the first dynamic step (iteration {self.cfg.static_iters + 1}); train past it to edit poses"
        return None

    def _posable(self) -> EditableField:
        reason = self.why_not_posable()
        if reason is not None:
            raise ValueError(reason)
        assert isinstance(self.field, EditableField)
        return self.field

    @torch.no_grad()
    def control_points(self, t: float, layer: PoseLayer | None = None) -> Tensor:
        return self._posable().node_positions(t, layer)

    @torch.no_grad()
    def drag_layer(self, drag: PoseDrag) -> PoseLayer:
        return self._posable().solve_drag(drag)

    @torch.no_grad()
    def add_keyframe(self, drag: PoseDrag) -> PoseLayer:
        field = self._posable()
        layer = field.solve_drag(drag)
        field.add_keyframe(layer)
        return layer

    def remove_keyframe(self, index: int) -> None:
        edits = self._posable().edits
        if not 0 <= index < edits.count:
            raise ValueError(f"there is no keyframe {index} (the motion has {edits.count}{': 0..' + str(edits.count - 1) if edits.count else ''})")
        edits.remove(index)

    def keyframes(self) -> list[Keyframe]:
        if not isinstance(self.field, EditableField):
            return []
        edits = self.field.edits
        moved = edits.moved().sum(-1).tolist()
        return [Keyframe(k, t, w, int(n)) for k, (t, w, n) in enumerate(zip(edits.times.tolist(), edits.widths.tolist(), moved))]

    def retime(self, op: dict) -> None:
        self.retiming = self.retiming.apply(op, self.num_frames)

    def edit_state(self) -> dict[str, Any]:
        edits = {k: v.detach().clone() for k, v in self.field.edits.state_dict().items()} if isinstance(self.field, EditableField) else {}
        return {"edits": edits, "retime": [dict(op) for op in self.retiming.ops]}

    def load_edit_state(self, state: dict[str, Any]) -> None:
        if isinstance(self.field, EditableField):
            self.field.edits.load_state_dict({k: v.to(self.device) for k, v in state["edits"].items()})
        self.retiming = Retime(state["retime"])

    @torch.no_grad()
    def evaluate(self, views: Views | None = None, chunk: int = 8) -> dict[str, float]:
        """PSNR / SSIM / mask IoU (and LPIPS / CLIP similarity with those networks) of renders against ``views`` (default: the held-out views) on white."""
        views = views if views is not None else self.test
        if views is None:
            return {}
        bg = torch.ones(3, device=self.device)
        sums = {"psnr": 0.0, "ssim": 0.0, "iou": 0.0}
        if self.lpips is not None:
            sums["lpips"] = 0.0
        if self.clip is not None:
            sums["clip"] = 0.0
        for start in range(0, len(views), chunk):
            part = views[start : start + chunk]
            splats = self.deformed(part.times)
            out = render(splats, part.cameras.reshape(len(part), 1), bg, backend=self.cfg.backend, sh_degree=self.model.sh_degree)
            gt = part.composite(bg)
            s = score(out.rgb[:, 0], out.alpha[:, 0], gt, part.alpha)
            if self.lpips is not None:
                s["lpips"] = self.lpips(out.rgb[:, 0], gt).mean().item()
            if self.clip is not None:
                s["clip"] = self.clip(out.rgb[:, 0], gt).mean().item()
            for k in sums:
                sums[k] += s[k] * len(part)
        return {k: v / len(views) for k, v in sums.items()}

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        opt = self.optimizer.state_dict()
        return {
            "iteration": self.iteration,
            "model": {name: getattr(self.model, name).detach().clone() for name in ("means", "sh_dc", "sh_rest", "opacity_logits", "log_scales", "quats")},
            "field": {k: v.detach().clone() for k, v in self.field.state_dict().items()},
            "optimizer": opt,
            "generator": self.generator.get_state(),
            "retime": [dict(op) for op in self.retiming.ops],
            "densify": {"grad_accum": self.strategy.grad_accum, "count": self.strategy.count},
            **({"novel": self.novel.state_dict()} if self.novel is not None and hasattr(self.novel, "state_dict") else {}),  # e.g. Zero123's SDS RNG
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.model.load_raw(state["model"])
        self.field.load_state_dict(state["field"])
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.retiming = Retime(state["retime"])
        if "novel" in state and self.novel is not None and hasattr(self.novel, "load_state_dict"):
            self.novel.load_state_dict(state["novel"])
        dens = state.get("densify") or {}
        self.strategy.grad_accum = dens.get("grad_accum")
        self.strategy.count = dens.get("count")
        if self.strategy.grad_accum is not None:
            self.strategy.grad_accum = self.strategy.grad_accum.to(self.device)
            self.strategy.count = self.strategy.count.to(self.device)
