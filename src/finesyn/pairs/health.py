"""The module's health: does the decoded pair give L_Cp anything to learn?

The pair (g(h), g(h̃)) only teaches invariance if it differs, and differs in what the criterion
selected. Measured on a fixed batch, as a training step makes the pair (train-mode batch statistics,
the run's own selection and perturbation, every BatchNorm's running statistics left alone), on deep
copies of the method and module with a generator of its own, so a run is the same with or without it:
- the pair gap: mean |g(h) − g(h̃)| in [0, 1] pixels and the encoder's cos between the pair's pooled
  features, beside the same for two augmented views of one image and for two different images;
- the same gap for as many *random* dimensions (is the criterion doing anything in image space?);
- the gradient norm on the backbone of ν·L_Cp relative to L_C's, and for contrastive methods L_Cp's
  pull towards the pair's other half against its push away from the negatives (`pair_forces`).
`class_content` adds, at the end of a run, the run's linear probe on decoded test images vs real ones.
"""

from __future__ import annotations

import copy
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from finesyn.data.augment import denormalize, eval_view, ssl_view
from finesyn.pairs.module import running_stats_kept


def _pixel_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((denormalize(a.float()) - denormalize(b.float())).abs().mean())


@torch.no_grad()
def _pooled(backbone, *batches: torch.Tensor) -> list[torch.Tensor]:
    """The pooled features of each batch, in one eval-mode forward (what the probes see; eval BN treats every
    image alone, so one forward of them all gives one per batch up to float rounding)."""
    mode = backbone.training
    backbone.eval()
    try:
        return list(backbone(torch.cat(batches)).split([len(b) for b in batches]))
    finally:
        backbone.train(mode)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=1).mean())


def _grad_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(cast(torch.Tensor, sum((g.float() ** 2).sum() for g in grads if g is not None))))


def pair_health(method, synth, images: torch.Tensor, indices: torch.Tensor, augment, crop: int, nu: float, seed: int = 0) -> dict:
    """The health numbers (module docstring) on the uint8 batch `images` (B, S, S, 3) with dataset `indices`."""
    m, s = copy.deepcopy(method), copy.deepcopy(synth)
    device = next(m.parameters()).device
    images, indices = images.to(device), indices.to(device)
    s.cfg = s.cfg.model_copy(update={"pair_fraction": 1.0})  # every row of the batch makes a pair
    m.train(), s.train()
    m.set_indices(indices)
    g = torch.Generator(device=images.device).manual_seed(seed)
    v1, v2 = ssl_view(images, augment, crop, g), ssl_view(images, augment, crop, g)
    params = [p for p in m.backbone.parameters() if p.requires_grad]
    with running_stats_kept(m), running_stats_kept(s.decoder):
        out = m.ssl_loss(v1, v2, update_state=False)
        pair = s(m, out, v1, g)
        d = pair.mask.numel()
        s_random = copy.deepcopy(s)
        s_random.cfg = s.cfg.model_copy(update={"criteria": ["random"], "k_random": pair.n_selected / d, "combine": "union"})
        rand = s_random(m, out, v1, g)
        grad_c, grad_cp = _grad_norm(out.loss, params), _grad_norm(nu * pair.pair, params)
        forces = m.pair_forces(pair.images[1], pair.images[2])
    _, xa, xb = pair.images
    _, ra, rb = rand.images
    other = torch.roll(v1, 1, dims=0)  # another image of the batch
    fa, fb, fra, frb, f1, f2 = _pooled(m.backbone, xa, xb, ra, rb, v1, v2)
    rec = {
        "n_selected": pair.n_selected,
        "feature_dim": d,
        "pair_pixel_gap": _pixel_gap(xa, xb),
        "random_dims_pixel_gap": _pixel_gap(ra, rb),
        "views_pixel_gap": _pixel_gap(v1, v2),
        "images_pixel_gap": _pixel_gap(v1, other),
        "pair_cos": _cos(fa, fb),
        "random_dims_cos": _cos(fra, frb),
        "views_cos": _cos(f1, f2),
        "images_cos": _cos(f1, torch.roll(f1, 1, dims=0)),
        "grad_ratio_cp_to_c": grad_cp / max(grad_c, 1e-12),
        "images": int(len(images)),
    }
    if forces is not None:
        rec.update({f"L_Cp_{k}": v for k, v in forces.items()})
    return rec


@torch.no_grad()
def _decoded_features(backbone, decoder, images: np.ndarray, idx: np.ndarray, crop: int, batch_size: int = 256) -> np.ndarray:
    """f(g(f(x))) of the eval views of images[idx], both modules in eval mode (restored after)."""
    modes = backbone.training, decoder.training
    backbone.eval(), decoder.eval()
    device = next(backbone.parameters()).device
    try:
        out = []
        for i in range(0, len(idx), batch_size):
            v = eval_view(torch.from_numpy(np.asarray(images[idx[i : i + batch_size]])), crop).to(device)
            out.append(backbone(decoder(backbone(v))).float().cpu())
    finally:
        backbone.train(modes[0]), decoder.train(modes[1])
    return torch.cat(out).numpy()


@torch.no_grad()
def class_content(
    backbone, decoder, images: np.ndarray, train_idx, test_idx, labels: np.ndarray, crop: int, num_classes: int, channels_last: bool = False
) -> dict:
    """Top-1 of the run's linear probe (lbfgs, l2 chosen on train as the probe stage does) on real test images
    and on their g(h): does the decoded image still carry the class? Chance is 100 / num_classes. Features on
    the decoder's device (where the run's models are), in the layout `channels_last` names."""
    from finesyn.eval.features import extract_features
    from finesyn.eval.probe import fit_linear, lbfgs_probe
    from finesyn.eval.retrieval import normalize

    dev = next(decoder.parameters()).device.type
    ftr = extract_features(backbone, images, train_idx, crop, device=dev, channels_last=channels_last)
    fte = extract_features(backbone, images, test_idx, crop, device=dev, channels_last=channels_last)
    real = lbfgs_probe(ftr, labels[train_idx], fte, labels[test_idx], num_classes=num_classes)
    w, b = fit_linear(ftr, labels[train_idx], num_classes, real["l2"])
    fdec = _decoded_features(backbone, decoder, images, np.asarray(test_idx), crop)
    pred = (torch.from_numpy(normalize(fdec)) @ w + b).argmax(1).numpy()
    return {
        "real_top1": real["top1"],
        "decoded_top1": float(100 * (pred == labels[test_idx]).mean()),
        "chance": 100 / num_classes,
        "test_images": int(len(test_idx)),
    }


HEALTH_IMAGES = 128  # the fixed batch at each monitor point: ~1 s on 2 CPU cores for the default
END_IMAGES = 2000  # test images of the end-of-run class-content check (every k-th of the test split)


def batch_health(images: np.ndarray, idx: np.ndarray, augment, crop: int, nu: float):
    """pretrain()'s `health`: `pair_health` on the fixed batch images[idx[:HEALTH_IMAGES]]."""
    idx = np.asarray(idx)[:HEALTH_IMAGES]
    batch = torch.from_numpy(np.ascontiguousarray(images[idx]))
    ids = torch.from_numpy(idx.astype(np.int64))

    def health(method, synth) -> dict:
        return pair_health(method, synth, batch, ids, augment, crop, nu)

    return health


def end_subset(test_idx) -> np.ndarray:
    """Up to END_IMAGES test images, evenly spread over the split (every k-th): the end-of-run checks'."""
    test_idx = np.asarray(test_idx)
    return test_idx[:: max(1, len(test_idx) // END_IMAGES)][:END_IMAGES]


def end_of_run_health(result, images: np.ndarray, labels: np.ndarray, train_idx, test_idx, cfg, crop: int, num_classes: int) -> dict:
    """train.json's `health` of a module run with pairs: `pair_health` on HEALTH_IMAGES test images and
    `class_content` on `end_subset` of them."""
    sub = end_subset(test_idx)
    pair = batch_health(images, sub, cfg.augment, crop, cfg.nu)(result.method, result.synth)
    cls = class_content(result.backbone, result.synth.decoder, images, train_idx, sub, labels, crop, num_classes, cfg.channels_last)
    return {"pair": pair, "class": cls}
