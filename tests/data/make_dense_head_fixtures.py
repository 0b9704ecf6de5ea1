"""Writes tests/data/dense_head_reference.npz / .json: DINOv3's linear dense heads trained and evaluated by
DINOv3's own code on fixed features, its schedulers' learning rates, its sliding-window inference, and
torch's interpolation.

Not part of the harness and not run by the tests. It needs, in a scratch virtualenv, torch + torchvision
(and `packaging`), plus the DINOv3 source (not on PyPI) as a git work tree on the path. It holds no code of
theirs; it calls, on fixed inputs:

1. Segmentation (`dinov3/eval/segmentation`): `models/heads/linear_head.LinearHead` (dropout 0 so the run is
   deterministic; the SyncBatchNorm swapped for a BatchNorm2d with the same state: without a process group
   SyncBatchNorm is BatchNorm, but it refuses CPU tensors), trained by `train.train_step` itself (the
   `if global_step > 0: scheduler.step()` stepping, clip_grad_norm_ with 'inf') with
   `loss.MultiSegmentationLoss(celoss_weight=1)` (CrossEntropyLoss, ignore 255, avg_non_ignore False),
   torch.optim.AdamW as `train.py` builds it, and `schedulers.WarmupOneCycleLR` (the ADE20k config's
   constructor kwargs through `schedulers.build_scheduler`, a short run: total 12, warm-up 4, lr 0.1). Then
   `LinearHead.predict` in eval mode,
   and `inference.make_inference(..., inference_mode="slide")` with a model whose `predict` is a fixed patch
   embedding (Conv2d, kernel = stride = patch) followed by the trained head's `predict`, then softmax as
   `eval.py` passes it.
2. Depth (`dinov3/eval/depth`): `models/linear_head.LinearHead` (BatchNorm as above) and
   `models.FeaturesToDepth` (256 linear bins would be the config; 16 here), trained with the lines of
   `train.Trainer.train_on_batch` (valid mask `datasets/datasets_utils.make_valid_mask(FULL, 0)`, bilinear
   upsampling of the depth map to the ground truth, `loss.SigLoss(warm_up=True, warm_iter=4)`,
   clip_grad_norm_, AdamW, `scheduler.step()` every step) with `schedulers.WarmupOneCycleLR` (the NYU
   config's kwargs, a short run: total 12, warm-up 4, lr 0.03, use_beta1). `Depther.forward` is composed
   by hand (encoder = the fixed features) without its CPU autocast, which would run the head in bfloat16.
   The clip norm is set to the median gradient norm of an unclipped dry run, so that some steps clip.
3. The real configs' schedules: lr (and Adam's beta1 for depth) at every optimiser step of the ADE20k
   linear config (40000 steps, `train_step`'s stepping) and the NYU config (38400 steps), sampled.
4. torch.nn.functional.interpolate, bilinear, align_corners=False (upsampling, downsampling, mixed) and
   nearest (the legacy `floor(dst * in / out)` index rule).

Run (the venv of make_miou_fixtures.py, /tmp/refvenv, with the DINOv3 work tree of that script):
    PYTHONPATH=/tmp/refsrc/dinov3 /tmp/refvenv/bin/python tests/data/make_dense_head_fixtures.py \\
        --dinov3 /tmp/refsrc/dinov3

Outputs (`seg_*`, `depth_*`, `sched_*`, `interp_*` keys; the .json lists every array's shape and dtype):
- `seg_feats` (12, 4, 8, 4, 4) float32 NCHW features per step, `seg_labels` (12, 4, 16, 16) int64 (255 =
  ignore), `seg_init_*` the head's initial conv weight / bias, `seg_loss` (12,), `seg_lr` (12,) the lr each
  optimiser step used, `seg_final_*` conv weight / bias, bn weight / bias / running_mean / running_var.
- `seg_eval_feats` (2, 8, 4, 4), `seg_eval_logits` (2, 5, 13, 11): `predict(..., rescale_to=(13, 11))`.
- `slide_image` (1, 3, 40, 70), `slide_patch_w` (8, 3, 6, 6), `slide_patch_b` (8,): the patch embedding;
  `slide_probs` (1, 5, 50, 87) the softmax of the slid, averaged, resized logits (crop 24, stride 16).
- `depth_feats` (12, 4, 8, 4, 4), `depth_gt` (12, 4, 1, 16, 16) float32 (0 = invalid), `depth_init_*`,
  `depth_loss`, `depth_lr`, `depth_beta1`, `depth_grad_norm` (before clipping), `depth_final_*`;
  `depth_eval_pred` (2, 1, 4, 4): the trained head's depth map (eval mode).
- `sched_seg_steps` / `sched_seg_lr`, `sched_depth_steps` / `sched_depth_lr` / `sched_depth_beta1`.
- `interp_x` (2, 3, 5, 7) and `interp_up` (17, 23), `interp_down` (3, 4), `interp_mixed` (9, 5) bilinear;
  `interp_nearest_12x9`, `interp_nearest_3x4`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

STEPS, WARMUP = 12, 4
B, D, GRID, LABEL = 4, 8, 4, 16
SEG_CLASSES, DEPTH_BINS = 5, 16
SEG_KW = dict(warmup_iters=WARMUP, warmup_ratio=1e-6, final_div_factor=float("inf"), pct_start=0,
              anneal_strategy="cos", use_beta1=False, update_momentum=False)  # config-ade20k-linear-training.yaml
DEPTH_KW = dict(final_div_factor=1000.0, warmup_iters=WARMUP, base_momentum=0.85, max_momentum=0.95)  # config-nyu.yaml


def _np(t):
    return t.detach().cpu().numpy().copy()


def _bn_like(sync_bn, torch):
    bn = torch.nn.BatchNorm2d(sync_bn.num_features, eps=sync_bn.eps, momentum=sync_bn.momentum)
    bn.load_state_dict(sync_bn.state_dict())
    return bn


def segmentation(torch, out):
    from dinov3.eval.segmentation import inference, train
    from dinov3.eval.segmentation.loss import MultiSegmentationLoss
    from dinov3.eval.segmentation.models.heads.linear_head import LinearHead
    from dinov3.eval.segmentation.schedulers import build_scheduler

    torch.manual_seed(0)
    head = LinearHead(in_channels=[D], n_output_channels=SEG_CLASSES, use_batchnorm=True, dropout=0.0)
    head.batchnorm_layer = _bn_like(head.batchnorm_layer, torch)
    out["seg_init_conv_w"], out["seg_init_conv_b"] = _np(head.conv.weight), _np(head.conv.bias)

    class Model(torch.nn.Module):  # what train_step calls: model(x) and model.module.parameters()
        def __init__(self):
            super().__init__()
            self.module = head

        def forward(self, x):
            return self.module([x])

    model = Model()
    optimizer = torch.optim.AdamW([{"params": head.parameters(), "lr": 0.1, "betas": (0.9, 0.999),
                                    "weight_decay": 1e-3}])
    scheduler = build_scheduler("WarmupOneCycleLR", optimizer, 0.1, STEPS, dict(SEG_KW))
    criterion = MultiSegmentationLoss(diceloss_weight=0.0, celoss_weight=1.0)
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(STEPS, B, D, GRID, GRID)).astype(np.float32)
    # Labels tied to the features (so the head learns), with ignored pixels.
    up = feats.repeat(LABEL // GRID, axis=3).repeat(LABEL // GRID, axis=4)
    labels = np.argmax(up[:, :, :SEG_CLASSES], axis=2).astype(np.int64)
    labels[rng.random(labels.shape) < 0.15] = 255
    head.train()
    losses, lrs = [], []
    for step in range(STEPS):
        lrs.append(optimizer.param_groups[0]["lr"])
        batch = (torch.tensor(feats[step]), (None, torch.tensor(labels[step])[:, None]))
        loss = train.train_step(model, batch, "cpu", None, optimizer, float("inf"), scheduler, criterion, None,
                                step)
        losses.append(float(loss.detach()))
    out.update(seg_feats=feats, seg_labels=labels, seg_loss=np.asarray(losses), seg_lr=np.asarray(lrs),
               seg_final_conv_w=_np(head.conv.weight), seg_final_conv_b=_np(head.conv.bias),
               seg_final_bn_w=_np(head.batchnorm_layer.weight), seg_final_bn_b=_np(head.batchnorm_layer.bias),
               seg_final_bn_mean=_np(head.batchnorm_layer.running_mean),
               seg_final_bn_var=_np(head.batchnorm_layer.running_var))
    head.eval()
    eval_feats = rng.normal(size=(2, D, GRID, GRID)).astype(np.float32)
    with torch.no_grad():
        out["seg_eval_logits"] = _np(head.predict([torch.tensor(eval_feats)], rescale_to=(13, 11)))
    out["seg_eval_feats"] = eval_feats

    patch = 6
    embed = torch.nn.Conv2d(3, D, kernel_size=patch, stride=patch)
    image = rng.uniform(-1, 1, size=(1, 3, 40, 70)).astype(np.float32)

    class Slid(torch.nn.Module):
        def predict(self, x, rescale_to):
            return head.predict([embed(x)], rescale_to=rescale_to)

    with torch.no_grad():
        probs = inference.make_inference(torch.tensor(image), Slid(), inference_mode="slide",
                                         decoder_head_type="linear", rescale_to=(50, 87),
                                         n_output_channels=SEG_CLASSES, crop_size=(24, 24), stride=(16, 16),
                                         output_activation=lambda x: torch.nn.functional.softmax(x, dim=1))
    out.update(slide_image=image, slide_patch_w=_np(embed.weight), slide_patch_b=_np(embed.bias),
               slide_probs=_np(probs))


def depth(torch, out):
    from dinov3.eval.depth.datasets.datasets_utils import _EvalCropType, make_valid_mask
    from dinov3.eval.depth.loss import SigLoss
    from dinov3.eval.depth.models import FeaturesToDepth
    from dinov3.eval.depth.models.linear_head import LinearHead
    from dinov3.eval.depth.schedulers import build_scheduler

    rng = np.random.default_rng(1)
    feats = rng.normal(size=(STEPS, B, D, GRID, GRID)).astype(np.float32)
    up = feats.repeat(LABEL // GRID, axis=3).repeat(LABEL // GRID, axis=4)
    gt = (2.0 + 1.5 * np.tanh(up[:, :, :1]) + 0.1 * rng.normal(size=(STEPS, B, 1, LABEL, LABEL))).astype(np.float32)
    gt[rng.random(gt.shape) < 0.1] = 0.0  # missing depth

    def run(clip):
        torch.manual_seed(0)
        head = LinearHead(in_channels=[D], n_output_channels=DEPTH_BINS, use_batchnorm=True, use_cls_token=False)
        head.batchnorm_layer = _bn_like(head.batchnorm_layer, torch)
        init = (_np(head.conv_depth.weight), _np(head.conv_depth.bias))
        to_depth = FeaturesToDepth(min_depth=0.001, max_depth=10.0, bins_strategy="linear", norm_strategy="linear")
        optimizer = torch.optim.AdamW([{"params": head.parameters(), "lr": 0.03, "betas": (0.9, 0.99),
                                        "weight_decay": 1e-4}])
        scheduler = build_scheduler("WarmupOneCycleLR", optimizer, 0.03, STEPS, dict(DEPTH_KW))
        criterion = SigLoss(warm_up=True, warm_iter=4)
        head.train()
        losses, lrs, beta1s, norms = [], [], [], []
        for step in range(STEPS):
            lrs.append(optimizer.param_groups[0]["lr"])
            beta1s.append(optimizer.param_groups[0]["betas"][0])
            depth_gt = torch.tensor(gt[step])
            valid = make_valid_mask(depth_gt, eval_crop=_EvalCropType("FULL"), ignored_value=0.0).bool()
            depth_gt[~valid] = 0.0
            optimizer.zero_grad(set_to_none=True)
            pred = to_depth(head([(torch.tensor(feats[step]), None)]))
            pred = torch.nn.functional.interpolate(pred, size=depth_gt.shape[2:], mode="bilinear",
                                                   align_corners=False)
            loss = criterion(pred, depth_gt, valid)
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(list(head.parameters()), clip)))
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        return head, to_depth, init, losses, lrs, beta1s, norms

    norms = run(float("inf"))[-1]
    clip = float(np.median(norms))
    head, to_depth, init, losses, lrs, beta1s, norms = run(clip)
    head.eval()
    eval_feats = rng.normal(size=(2, D, GRID, GRID)).astype(np.float32)
    with torch.no_grad():
        eval_pred = to_depth(head([(torch.tensor(eval_feats), None)]))
    out.update(depth_feats=feats, depth_gt=gt, depth_init_conv_w=init[0], depth_init_conv_b=init[1],
               depth_clip=np.float64(clip), depth_loss=np.asarray(losses), depth_lr=np.asarray(lrs),
               depth_beta1=np.asarray(beta1s), depth_grad_norm=np.asarray(norms),
               depth_final_conv_w=_np(head.conv_depth.weight), depth_final_conv_b=_np(head.conv_depth.bias),
               depth_final_bn_w=_np(head.batchnorm_layer.weight), depth_final_bn_b=_np(head.batchnorm_layer.bias),
               depth_final_bn_mean=_np(head.batchnorm_layer.running_mean),
               depth_final_bn_var=_np(head.batchnorm_layer.running_var),
               depth_eval_feats=eval_feats, depth_eval_pred=_np(eval_pred))


def schedules(torch, out):
    from dinov3.eval.depth.schedulers import build_scheduler as depth_scheduler
    from dinov3.eval.segmentation.schedulers import build_scheduler as seg_scheduler

    def sample(total, special):
        return sorted(set(range(0, total, 97)) | set(special) | {total - 1})

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 1e-3}])
    sched = seg_scheduler("WarmupOneCycleLR", opt, 1e-3, 40000, {**SEG_KW, "warmup_iters": 1500})
    lrs = []
    for step in range(40000):  # train.py: the lr step `step` uses, then `if global_step > 0: scheduler.step()`
        lrs.append(opt.param_groups[0]["lr"])
        if step > 0:
            sched.step()
    keep = sample(40000, (0, 1, 2, 750, 1499, 1500, 1501, 1502, 10000, 20000, 39998))
    out["sched_seg_steps"], out["sched_seg_lr"] = np.asarray(keep), np.asarray(lrs)[keep]

    opt = torch.optim.AdamW([{"params": [p], "lr": 3e-4, "betas": (0.9, 0.99), "weight_decay": 1e-4}])
    sched = depth_scheduler("WarmupOneCycleLR", opt, 3e-4, 38400, {**DEPTH_KW, "warmup_iters": 12800})
    lrs, betas = [], []
    for _ in range(38400):  # depth/train.py: scheduler.step() after every optimiser step
        lrs.append(opt.param_groups[0]["lr"])
        betas.append(opt.param_groups[0]["betas"][0])
        sched.step()
    keep = sample(38400, (0, 1, 12799, 12800, 12801, 25600))
    out.update(sched_depth_steps=np.asarray(keep), sched_depth_lr=np.asarray(lrs)[keep],
               sched_depth_beta1=np.asarray(betas)[keep])


def interpolation(torch, out):
    x = np.random.default_rng(2).normal(size=(2, 3, 5, 7)).astype(np.float32)
    t = torch.tensor(x)
    out["interp_x"] = x
    for name, size in (("up", (17, 23)), ("down", (3, 4)), ("mixed", (9, 5))):
        out[f"interp_{name}"] = _np(torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False))
    for size in ((12, 9), (3, 4)):
        out[f"interp_nearest_{size[0]}x{size[1]}"] = _np(torch.nn.functional.interpolate(t, size=size, mode="nearest"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dinov3", required=True, help="a DINOv3 git work tree")
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "dense_head_reference"))
    args = parser.parse_args()
    sys.path.insert(0, args.dinov3)
    import torch

    torch.set_num_threads(1)
    out: dict[str, np.ndarray] = {}
    segmentation(torch, out)
    depth(torch, out)
    schedules(torch, out)
    interpolation(torch, out)
    np.savez_compressed(args.out + ".npz", **out)
    commit = subprocess.run(["git", "-C", args.dinov3, "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    meta = {"dinov3_commit": commit, "torch": torch.__version__, "numpy": np.__version__,
            "steps": STEPS, "warmup": WARMUP, "batch": B, "channels": D, "grid": GRID, "label_size": LABEL,
            "seg_classes": SEG_CLASSES, "depth_bins": DEPTH_BINS, "seg_scheduler": SEG_KW,
            "depth_scheduler": {**DEPTH_KW, "div_factor": 25.0, "use_beta1": True},
            "seg_optimizer": {"lr": 0.1, "betas": [0.9, 0.999], "weight_decay": 1e-3, "clip": "inf"},
            "depth_optimizer": {"lr": 0.03, "betas": [0.9, 0.99], "weight_decay": 1e-4,
                                "clip": float(out["depth_clip"])},
            "sigloss_warm_iter": 4, "slide": {"crop": 24, "stride": 16, "patch": 6, "image": [40, 70],
                                              "label": [50, 87]},
            "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in sorted(out.items())}}
    with open(args.out + ".json", "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
