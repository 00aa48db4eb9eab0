"""Spatial Grad-CAM induced from an SSL loss (Fig. 3 analogue), the choice made here:
* the loss of an image x is L = −mean_k cos(f(x), f(v_k)): the negative cosine similarity
  between the pooled feature of x (centre crop, as the probes see it) and the pooled features
  of K views v_k of the same image made with the pretraining augmentation (`pretrain.augment`,
  fixed seed; no gradient through the views, like a stop-gradient / momentum target);
* channel weights w_c = spatial mean of −∂L/∂A_c (the gradient of the similarity, as Grad-CAM
  explains a score; the same sign as the module's importance h_j·(−∂L_C/∂h_j));
* CAM = ReLU(Σ_c w_c A_c), bilinearly upsampled to the input size.
A is the last conv block (`Backbone.forward_maps`, layer4) when its maps are at least
`min_size` (4) pixels on a side; at low resolution (layer4 is 1×1 for 32-px and 2×2 for 64-px
inputs with the standard stem) the deepest block that is that large is used, and the figure
says which. h is pooled from the maps by the encoder's own global pool (`pretrain.pool`), so the
CAM explains the feature the probes read. With average pooling the cosine's scale invariance
gives Σ_c w_c h_c = 0 at layer4: the map before the ReLU has zero spatial mean and shows where
the features agree with the other views *more than the image's average*. With max pooling the
gradient reaches each channel only at its maximum, so w_c weighs the whole map A_c by how much
that channel's peak serves the similarity — the regions the SSL objective relies on either way.
"""

from __future__ import annotations

LAYERS = ("layer1", "layer2", "layer3", "layer4")


# ----------------------------------------------------------------------------- Fig. 3 analogue
def _maps_at(backbone, x, layer: str):
    """Feature maps after `layer` (layer4 via Backbone.forward_maps)."""
    if layer == "layer4":
        return backbone.forward_maps(x)
    n = backbone.net
    a = n.maxpool(n.relu(n.bn1(n.conv1(x))))
    for name in LAYERS:
        a = getattr(n, name)(a)
        if name == layer:
            return a
    raise ValueError(f"unknown layer {layer!r}; expected one of {LAYERS}")


def _pool_from(backbone, a, layer: str):
    """The pooled feature h computed from the maps after `layer`: the rest of the trunk and the encoder's
    own global pool (average or maximum), so the CAM explains the h the probes see."""
    for name in LAYERS[LAYERS.index(layer) + 1 :]:
        a = getattr(backbone.net, name)(a)
    return backbone.net.avgpool(a).flatten(1)


def cam_layer(backbone, input_size: int, min_size: int = 4) -> str:
    """The deepest residual block whose maps are at least `min_size` on a side for this input size."""
    import torch

    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(1, 3, input_size, input_size)
            n = backbone.net
            a = n.maxpool(n.relu(n.bn1(n.conv1(x))))
            sizes = {}
            for name in LAYERS:
                a = getattr(n, name)(a)
                sizes[name] = a.shape[-1]
    finally:
        backbone.train(was_training)
    for name in reversed(LAYERS):
        if sizes[name] >= min_size:
            return name
    return "layer1"


def gradcam(backbone, x, score, layer: str = "layer4"):
    """Spatial Grad-CAM of `x` (N,3,H,W, normalised) explaining `score(h)`: (N,) scores of the pooled
    features h, one per image. Weights = spatial mean of ∂score/∂A; CAM = ReLU(Σ w·A) upsampled to
    (N,H,W). The backbone is used in eval mode and not modified."""
    import torch
    import torch.nn.functional as F

    was_training = backbone.training
    backbone.eval()
    try:
        with torch.enable_grad():
            maps = _maps_at(backbone, x, layer)
            if not maps.requires_grad:
                maps.requires_grad_(True)
            (grad,) = torch.autograd.grad(score(_pool_from(backbone, maps, layer)).sum(), maps)
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * maps.detach()).sum(dim=1, keepdim=True))
        return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    finally:
        backbone.train(was_training)


def ssl_gradcam(backbone, x, views, layer: str = "layer4"):
    """Grad-CAM of `x` explaining the similarity mean_k cos(f(x), f(views[k])) (the negative of the
    SSL-style loss L). `views`: (K,N,3,h,w) other views of the same images (or (N,3,h,w) for K=1)."""
    import torch
    import torch.nn.functional as F

    if views.dim() == 4:
        views = views.unsqueeze(0)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            targets = backbone(views.flatten(0, 1)).view(views.shape[0], views.shape[1], -1)  # (K,N,d), one batch
    finally:
        backbone.train(was_training)
    return gradcam(backbone, x, lambda h: torch.stack([F.cosine_similarity(h, t, dim=1) for t in targets]).mean(0), layer)


def class_gradcam(backbone, x, weight, bias, labels, layer: str = "layer4"):
    """Classic Grad-CAM of `x` explaining each image's class logit under a linear probe on the
    L2-normalised features (`weight` (d,C), `bias` (C,), as `eval.probe` fits them): where the
    evidence for the class lies, the yardstick for the SSL-induced maps."""
    import torch
    import torch.nn.functional as F

    rows = torch.arange(len(x))
    return gradcam(backbone, x, lambda h: (F.normalize(h, dim=1) @ weight + bias)[rows, labels], layer)


def augmented_views(images_uint8, augment_cfg, size: int, n_views: int, seed: int = 0):
    """(K,N,3,size,size) views of a uint8 (N,S,S,3) tensor with the pretraining augmentation, fixed seed."""
    import torch

    from finesyn.data.augment import ssl_view

    g = torch.Generator().manual_seed(seed)
    return torch.stack([ssl_view(images_uint8, augment_cfg, size, g) for _ in range(n_views)])


def mass_on(cams, masks):
    """Share of each map's Grad-CAM mass that falls on a region: Σ cam·mask / Σ cam per image, with
    `masks` soft coverages in [0, 1] of the same (N, H, W) shape; NaN where a map is all zero. A map
    spread evenly would score the region's area share, the yardstick to read it against."""
    import numpy as np

    cams, masks = np.asarray(cams, dtype=np.float64), np.asarray(masks, dtype=np.float64)
    if cams.shape != masks.shape:
        raise ValueError(f"CAMs {cams.shape} and masks {masks.shape} must have the same shape")
    total = cams.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (cams * masks).sum(axis=(1, 2)) / total, np.nan)
