"""Sub-pixel correction of a network disparity by local photometric matching at the input resolution.

Why: the lite GC-Net matches at 1/4 resolution and regresses one disparity per feature pixel; the image-guided
refinement head sharpens edges but never sees the right image, so it cannot fix *matching* precision.  On
well-textured surfaces the result is a smooth, wavy bias of 0.5-2 px that classical block matching does not
have (SGBM is sub-pixel accurate exactly where it is valid).  This stage keeps the network's robust answer
and only looks for a better one within ``radius`` px of it:

1. warp the right image by the network disparity plus each integer offset ``k`` in ``-radius-1 .. radius+1``
   (bilinear, so the search grid follows the network's continuous, slanted disparity field rather than a
   fronto-parallel window),
2. score every offset with zero-mean normalised cross-correlation (ZNCC) over a ``window`` x ``window``
   box: invariant to gain and offset between the cameras, so it survives the exposure and gamma
   differences real stereo rigs have,
3. take the best offset, fit a parabola through it and its neighbours for the sub-pixel part.

Optionally, before the first round, an independent estimate (``candidate``: the pipeline passes OpenCV
SGBM's disparity) is offered to every pixel once, under the same ZNCC test as propagation: it reaches the
network's gross errors, a wrong surface tens of px off, which no local search can.

Optionally, before the search, ``propagation`` > 0 lets each pixel try its neighbours' disparities (``p`` and
``2p`` px away in the four directions, PatchMatch-style) and keep the best-scoring one: the network works at
1/4 resolution, so near a depth edge it smears the foreground disparity several pixels onto the background
(edge fattening), while a background neighbour a few pixels further out still carries the right answer,
far beyond the search radius.

With ``window_shift`` s > 0 every score is the best over the windows whose centre lies within s px (a
"shiftable" window, still containing the pixel): next to a depth edge the centred window straddles both
surfaces and matches neither, a window shifted onto the pixel's own side does.  With ``fill_border``, the
pixels whose disparity points outside the right image (``x - d < 0``) finally take the nearest matchable
value to their right (:func:`fill_left_border`).

A pixel is changed only when the evidence is clear: the best offset lies inside the searched range (not at
its border) with a peak at least ``min_peak_curvature`` sharp, its ZNCC is at least ``min_zncc``, and the
left window has texture (grey-level std at least ``min_texture``, and optionally the horizontal-texture
gates of :func:`textured_windows`).  Textureless
regions, occlusions and repetitive patterns the network resolved keep the network's value.  Cost:
``2 * radius + 3`` (+ 9 with propagation) warps and box filters per round, batched, in strips of rows
(cache-sized on a CPU), on the engine's device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from scene_perception.pipelines.local_refinement_config import LocalRefinementConfig

__all__ = ["LocalRefinementConfig", "fill_left_border", "noise_std", "refine_disparity_locally",
           "textured_windows", "window_std", "zncc_at"]


def _box(x: Tensor, window: int) -> Tensor:
    """Mean over a window x window box per channel (border replicated).

    On CPU a depthwise convolution in channels-last layout, not ``avg_pool2d``: there (oneDNN) it is ~10x
    faster for the 3 * K channels filtered here at once.
    """
    c = x.shape[1]
    r = window // 2
    padded = F.pad(x, (r, r, r, r), mode="replicate")
    if x.device.type != "cpu":
        # Not a convolution off the CPU: cuDNN may run fp32 convs as TF32 (10-bit mantissa, torch's default
        # on Ampere and later), and ZNCC from box sums (E[x^2] - E[x]^2) cannot afford that rounding.
        return F.avg_pool2d(padded, window, stride=1)
    kernel = torch.full((c, 1, window, window), 1.0 / (window * window), dtype=x.dtype, device=x.device)
    # A no-op when ``x`` is already channels-last (replicate padding keeps the layout): _zncc builds it so.
    return F.conv2d(padded.contiguous(memory_format=torch.channels_last), kernel, groups=c)


def _sliding_max(x: Tensor, k: int, dim: int) -> Tensor:
    """Max over every run of ``k`` consecutive elements along ``dim`` (length shrinks by ``k - 1``).

    By doubling: maxima over runs of 1, 2, 4, ... p <= k elements, then two overlapping runs of ``p`` cover
    ``k``.  A few element-wise maxima instead of ``max_pool2d``, which on CPU took ~10x longer here.
    """
    p = 1
    while 2 * p <= k:
        n = x.shape[dim] - p
        x = torch.maximum(x.narrow(dim, 0, n), x.narrow(dim, p, n))
        p *= 2
    n = x.shape[dim] - (k - p)
    return torch.maximum(x.narrow(dim, 0, n), x.narrow(dim, k - p, n)) if k > p else x


def _shift_max(score: Tensor, shift: int) -> Tensor:
    """Best score over the windows whose centre lies within ``shift`` px (a square neighbourhood).

    Max-filtering the per-window ZNCC turns the centred window into a shiftable one: a pixel next to a depth
    edge scores a candidate by the window that lies on its own side of the edge.  Separable (a row, then a
    column maximum); outside the image counts as -2, below any ZNCC.
    """
    if shift <= 0:
        return score
    k = 2 * shift + 1
    score = _sliding_max(F.pad(score, (shift, shift, 0, 0), value=-2.0), k, dim=-1)
    return _sliding_max(F.pad(score, (0, 0, shift, shift), value=-2.0), k, dim=-2)


def _shift(cfg: LocalRefinementConfig) -> int:
    """The window shift in effect: a window must still contain its pixel."""
    return min(cfg.window_shift, cfg.window // 2)


def _grey(img: Tensor) -> Tensor:
    return img.mean(dim=1, keepdim=True) if img.shape[1] > 1 else img


def _window_mean_var(grey: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Mean and variance of a grey image over ``window`` x ``window`` boxes."""
    mean = _box(grey, window)
    return mean, (_box(grey * grey, window) - mean * mean).clamp_min(0.0)


def window_std(image: Tensor, window: int) -> Tensor:
    """Grey-level std over a ``window`` x ``window`` box of a (N, C, H, W) image in 0..1: the texture
    measure the refinement's ``min_texture`` gates on, (N, 1, H, W).  Where it is ~0 nothing can be
    matched, so a disparity there is whatever the network guessed."""
    return _window_mean_var(_grey(image.float()), window)[1].sqrt()


def textured_windows(grey: Tensor, var: Tensor, cfg: LocalRefinementConfig) -> Tensor:
    """Where a window has enough texture to fix a disparity: grey std >= ``min_texture`` and, when
    ``min_x_texture`` > 0, an RMS horizontal derivative >= it, when ``min_x_snr`` > 0 >= it times the
    frame's :func:`noise_std`, and, when ``min_x_share`` > 0, a horizontal share of the gradient energy >=
    it (all over ``window`` x ``window``).

    Why the horizontal tests: a window whose only structure is a horizontal edge has a large grey std but
    matches every horizontal shift equally well (the aperture problem), so the best ZNCC there is
    arbitrary.  ``grey``, ``var``: (1, 1, H, W), the left image and its window variance.
    """
    textured = var >= cfg.min_texture ** 2
    if cfg.min_x_texture > 0 or cfg.min_x_share > 0 or cfg.min_x_snr > 0:
        padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
        gx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
        gy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
        energy_x, energy_y = _box(torch.cat([gx * gx, gy * gy], dim=1), cfg.window).split(1, dim=1)
        if cfg.min_x_texture > 0:
            textured &= energy_x >= cfg.min_x_texture ** 2
        if cfg.min_x_snr > 0:
            textured &= energy_x >= (cfg.min_x_snr * noise_std(grey)) ** 2
        if cfg.min_x_share > 0:
            textured &= energy_x >= cfg.min_x_share * (energy_x + energy_y)
    return textured


#: Immerkaer's 3x3 mask, the difference of two discrete Laplacians: it cancels planes (smooth shading), and
#: white noise of std sigma gives a response of std 6 sigma.
_NOISE_MASK = ((1.0, -2.0, 1.0), (-2.0, 4.0, -2.0), (1.0, -2.0, 1.0))


def noise_std(grey: Tensor) -> Tensor:
    """GT-free estimate of a grey image's noise std (0-dim tensor, grey units): ``1.4826 median(|I * M|) /
    6`` with Immerkaer's mask M (J. Immerkaer, "Fast noise variance estimation", CVIU 1996).  The median (a
    robust std of the response) keeps edges and texture, which give a few large responses, out of it.
    ``grey``: (1, 1, H, W), at least 3x3."""
    kernel = torch.tensor(_NOISE_MASK, dtype=grey.dtype, device=grey.device).view(1, 1, 3, 3)
    response = F.conv2d(grey, kernel)
    return 1.4826 * response.abs().median() / 6.0


def zncc_at(left: Tensor, right: Tensor, disparity: Tensor, window: int) -> tuple[Tensor, Tensor, Tensor]:
    """ZNCC of each pixel's ``window`` x ``window`` box with the right image warped by ``disparity``, the
    refinement's own score (no window shift), for measures that judge a finished disparity
    (``view_agreement.py``).  Returns (1, 1, H, W) scores, a mask of the pixels scored (finite disparity,
    match inside the right image) and the left box's grey variance (the texture measure, squared)."""
    grey_l, grey_r = _grey(left.float()), _grey(right.float())
    mean_l, var_l = _window_mean_var(grey_l, window)
    d = disparity.float()
    finite = torch.isfinite(d)
    field = torch.where(finite, d, 0.0)[0]
    score = _zncc(grey_l, grey_r, mean_l, var_l, field, window)
    return score, finite & _samples_in_image(field), var_l


def refine_disparity_locally(
    left: Tensor, right: Tensor, disparity: Tensor, config: LocalRefinementConfig | None = None,
    candidate: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Return ``(refined disparity, changed mask)`` for a rectified pair.

    Args:
        left, right: (1, C, H, W) float images, any common scale (ZNCC ignores gain and offset; the
            texture threshold assumes 0..1).
        disparity: (1, 1, H, W) px, the network's estimate for the left image (non-finite values are kept).
        config: search and acceptance settings.
        candidate: optional (1, 1, H, W) px, another matcher's disparity (NaN where it has none), offered
            once before the rounds (:func:`_offer_candidate`).

    Returns:
        The disparity with accepted corrections applied (same dtype and device) and a bool (1, 1, H, W)
        mask of the pixels that were changed.
    """
    cfg = config or LocalRefinementConfig()
    if left.shape != right.shape or left.dim() != 4 or left.shape[0] != 1:
        raise ValueError(f"left and right must both be (1, C, H, W); got {tuple(left.shape)}, "
                         f"{tuple(right.shape)}")
    if disparity.shape != (1, 1, *left.shape[2:]):
        raise ValueError(f"disparity must be (1, 1, H, W) for {tuple(left.shape)} images, "
                         f"got {tuple(disparity.shape)}")
    grey_l, grey_r = _grey(left.float()), _grey(right.float())
    mean_l, var_l = _window_mean_var(grey_l, cfg.window)
    refined = disparity.float()
    changed = torch.zeros_like(refined, dtype=torch.bool)
    images = (grey_l, grey_r, mean_l, var_l, textured_windows(grey_l, var_l, cfg))
    if candidate is not None:
        if candidate.shape != disparity.shape:
            raise ValueError(f"candidate must be shaped like the disparity {tuple(disparity.shape)}, "
                             f"got {tuple(candidate.shape)}")
        refined, accepted = _offer_candidate(*images, refined, candidate.float(), cfg)
        changed |= accepted
    r = cfg.window // 2
    for _ in range(cfg.iterations):
        if cfg.propagation:
            refined, accepted = _by_strips(_propagate, images, refined, cfg,
                                           halo=r + _shift(cfg) + 2 * cfg.propagation)
            changed |= accepted
        refined, accepted = _by_strips(_search, images, refined, cfg, halo=r + _shift(cfg))
        changed |= accepted
    if cfg.fill_border:
        refined, filled = fill_left_border(refined)
        changed &= ~filled
    return refined.to(disparity.dtype), changed


def fill_left_border(disparity: Tensor) -> tuple[Tensor, Tensor]:
    """Continue each row's first matchable disparity over the pixels that cannot be matched at all.

    A left-image pixel with ``x - d < 0`` would match a point left of the right image: the left camera
    alone sees it, so no photometric test can confirm any value there, and the network's guess near the
    image edge (its cost volume is cut off there) is often several px off.  Such a pixel takes the value of
    the nearest pixel to its right (same row) whose match lies inside the right image, so the band
    continues the surface that enters the view, the usual assumption when filling unmatched pixels.
    Non-finite disparities and rows without any matchable pixel are kept.  Returns ``(disparity, filled
    mask)``, both (1, 1, H, W).
    """
    d = disparity[0, 0]
    w = d.shape[-1]
    xs = torch.arange(w, device=d.device)
    outside = (xs - d) < 0  # False for NaN
    matchable = torch.isfinite(d) & ~outside
    # Index of the nearest matchable pixel at or right of x (w: none), by a reverse running minimum.
    nearest = torch.where(matchable, xs, w).flip(-1).cummin(dim=-1).values.flip(-1)
    filled = outside & (nearest < w)
    values = d.gather(1, nearest.clamp(max=w - 1))
    return torch.where(filled, values, d)[None, None], filled[None, None]


#: Rows per strip, on CPU only: there the K-channel temporaries of a whole VGA frame (tens of MB) fall out
#: of cache; 128-row strips ran one search round at 640x480 in 131 instead of 204 ms (2 threads).
STRIP_ROWS = 128


def _by_strips(
    stage: Callable[..., tuple[Tensor, Tensor]], images: tuple[Tensor, ...], disparity: Tensor,
    cfg: LocalRefinementConfig, halo: int,
) -> tuple[Tensor, Tensor]:
    """Run ``stage`` on horizontal strips with ``halo`` extra rows each side, keep each strip's own rows.

    Same result as one pass up to float rounding: a stage's output at a pixel depends only on inputs within
    ``halo`` rows of it (box filter radius, plus the propagation reach), and at the image's top and bottom a
    strip ends where the image does.  (Rounding does show: ZNCC from box sums is ill-conditioned in weakly
    textured windows, so a few near-tie pixels choose differently; in one search round 0.2 % of a VGA test
    frame moved by more than 0.01 px, 0.003 % by more than 0.5 px, and later rounds, re-fitting around the
    last result, spread such differences to tenths of a pixel.  Validation metrics did not move: EPE
    1.643 -> 1.644 px, bad-2 7.14 %.)
    """
    h = disparity.shape[2]
    if disparity.device.type != "cpu" or h <= STRIP_ROWS + 2 * halo:  # a GPU wants few, large launches
        return stage(*images, disparity, cfg)
    out, mask = torch.empty_like(disparity), torch.empty_like(disparity, dtype=torch.bool)
    for y0 in range(0, h, STRIP_ROWS):
        y1 = min(h, y0 + STRIP_ROWS)
        a, b = max(0, y0 - halo), min(h, y1 + halo)
        part, accepted = stage(*(t[:, :, a:b] for t in images), disparity[:, :, a:b], cfg)
        out[:, :, y0:y1] = part[:, :, y0 - a: y1 - a]
        mask[:, :, y0:y1] = accepted[:, :, y0 - a: y1 - a]
    return out, mask


def _zncc(grey_l: Tensor, grey_r: Tensor, mean_l: Tensor, var_l: Tensor, fields: Tensor,
          window: int, shift: int = 0) -> Tensor:
    """ZNCC of the left image with the right one warped by each of K disparity fields (K, H, W).

    Returns the (1, K, H, W) scores, each the best over windows shifted up to ``shift`` px (channels-last
    on every device: the box filter's layout; readers do not care).  This is the refinement's inner loop
    (about 90 % of its CPU time), so it writes into preallocated buffers and works in place, but runs the
    textbook form's operations in its order: the result is the same to the bit (tested), and the
    refinement 15-21 % faster on a CPU (``benchmarks/refinement_speed.py``).
    """
    k, h, w = fields.shape
    dev = fields.device
    # grid_sample's normalised coordinates (align_corners): x of the sample in the right image, and the row.
    grid = torch.empty(k, h, w, 2, device=dev)
    grid_x = grid[..., 0]
    torch.sub(torch.arange(w, device=dev, dtype=torch.float32), fields, out=grid_x)
    grid_x.mul_(2.0 / max(w - 1, 1)).sub_(1.0)
    rows = torch.arange(h, device=dev, dtype=torch.float32) * (2.0 / max(h - 1, 1)) - 1.0
    grid[..., 1].copy_(rows.view(1, h, 1))
    warped = F.grid_sample(grey_r.expand(k, 1, h, w), grid, mode="bilinear", padding_mode="border",
                           align_corners=True).view(1, k, h, w)
    # One filtering pass over all fields: [right, right^2, left*right] x K channels, stacked straight into
    # the channels-last layout the CPU box filter wants (no extra copy).
    stacked = torch.empty(1, 3 * k, h, w, device=dev, memory_format=torch.channels_last)
    stacked[:, :k] = warped
    torch.mul(warped, warped, out=stacked[:, k:2 * k])
    torch.mul(grey_l, warped, out=stacked[:, 2 * k:])
    mean_r, mean_rr, mean_lr = _box(stacked, window).split(k, dim=1)
    # In place, but operation for operation the plain form's (no fused multiply-add: ZNCC from box sums is
    # ill-conditioned in weak texture, and a changed rounding flips near-ties between candidates).
    var_r = mean_r * mean_r
    torch.sub(mean_rr, var_r, out=var_r).clamp_min_(0.0)  # E[r^2] - E[r]^2
    covariance = mean_l * mean_r
    torch.sub(mean_lr, covariance, out=covariance)  # E[lr] - E[l] E[r]
    zncc = covariance.div_(var_r.mul_(var_l).add_(1e-12).sqrt_())
    return _shift_max(zncc, shift)


def _samples_in_image(fields: Tensor) -> Tensor:
    """(1, 1, H, W): where every one of the K fields (K, H, W) samples inside the right image."""
    x_src = torch.arange(fields.shape[-1], device=fields.device, dtype=torch.float32) - fields
    return ((x_src >= 0) & (x_src <= fields.shape[-1] - 1)).all(dim=0)[None, None]


def _neighbour_fields(field: Tensor, steps: list[tuple[int, int]]) -> Tensor:
    """(K, H, W): ``field`` (H, W) moved by each (dy, dx) so that pixel (y, x) holds the value at
    (y + dy, x + dx); edges replicated.  One padding for all K."""
    h, w = field.shape
    pad = max(max(abs(dy), abs(dx)) for dy, dx in steps)
    padded = F.pad(field[None, None], (pad, pad, pad, pad), mode="replicate")[0, 0]
    return torch.stack([padded[pad + dy: pad + dy + h, pad + dx: pad + dx + w] for dy, dx in steps])


def _propagate(
    grey_l: Tensor, grey_r: Tensor, mean_l: Tensor, var_l: Tensor, textured: Tensor, disparity: Tensor,
    cfg: LocalRefinementConfig,
) -> tuple[Tensor, Tensor]:
    """Each pixel tries its neighbours' disparities (see ``propagation``) and keeps the best-matching one."""
    base = torch.nan_to_num(disparity, nan=0.0, posinf=0.0, neginf=0.0)[0, 0]
    p = cfg.propagation
    steps = [(0, 0)] + [(dy * m, dx * m) for m in (p, 2 * p) for dy, dx in ((0, -1), (0, 1), (-1, 0), (1, 0))]
    fields = _neighbour_fields(base, steps)
    xs = torch.arange(fields.shape[-1], device=fields.device, dtype=torch.float32)
    # A candidate must sample inside the right image.
    return _keep_best((grey_l, grey_r, mean_l, var_l, textured), disparity, fields, (xs - fields >= 0)[None],
                      cfg)


def _offer_candidate(
    grey_l: Tensor, grey_r: Tensor, mean_l: Tensor, var_l: Tensor, textured: Tensor, disparity: Tensor,
    candidate: Tensor, cfg: LocalRefinementConfig,
) -> tuple[Tensor, Tensor]:
    """Each pixel takes ``candidate`` where it is finite, samples inside the right image and wins
    :func:`_keep_best`'s test against the current value.  Whole frame at once (two fields only, so no
    strips)."""
    c = candidate[0, 0]
    fields = torch.stack([torch.nan_to_num(disparity[0, 0], nan=0.0, posinf=0.0, neginf=0.0),
                          torch.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0)])
    xs = torch.arange(fields.shape[-1], device=fields.device, dtype=torch.float32)
    usable = torch.stack([torch.ones_like(c, dtype=torch.bool), torch.isfinite(c) & (xs - c >= 0)])[None]
    margin = None
    if cfg.candidate_far_margin > 0:
        # A far candidate must win clearly (see ``candidate_far_margin``): field 1 needs the margin there.
        far = (fields[1] - fields[0]).abs() > cfg.candidate_far_px
        margin = torch.stack([torch.zeros_like(c), far.float() * cfg.candidate_far_margin])[None]
    return _keep_best((grey_l, grey_r, mean_l, var_l, textured), disparity, fields, usable, cfg, margin)


def _keep_best(
    images: tuple[Tensor, Tensor, Tensor, Tensor, Tensor], disparity: Tensor, fields: Tensor, usable: Tensor,
    cfg: LocalRefinementConfig, margin: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Each pixel takes the best-ZNCC field among the ``usable`` ones (1, K, H, W) of ``fields`` (K, H, W)
    where that is not field 0 (its own value, always eligible; a tie keeps it), scores at least
    ``min_zncc`` and the left window is textured.  With ``margin`` (1, K, H, W), field k is usable only
    where its ZNCC beats field 0's by at least that.  Returns ``(disparity, accepted mask)``."""
    grey_l, grey_r, mean_l, var_l, textured = images
    zncc = _zncc(grey_l, grey_r, mean_l, var_l, fields, cfg.window, _shift(cfg))
    usable = usable.clone()
    if margin is not None:
        usable &= zncc >= zncc[:, :1] + margin
    usable[:, 0] = True
    best_score, best = zncc.masked_fill(~usable, -2.0).max(dim=1, keepdim=True)
    accept = (
        (best > 0)
        & (best_score >= cfg.min_zncc)
        & textured
        & torch.isfinite(disparity)
    )
    return torch.where(accept, fields[None].gather(1, best), disparity), accept


def _search(
    grey_l: Tensor, grey_r: Tensor, mean_l: Tensor, var_l: Tensor, textured: Tensor, disparity: Tensor,
    cfg: LocalRefinementConfig,
) -> tuple[Tensor, Tensor]:
    """One ZNCC search of +-radius (+1 for the parabola) around ``disparity``; see the module docstring."""
    win = cfg.window
    base = torch.nan_to_num(disparity, nan=0.0, posinf=0.0, neginf=0.0)

    offsets = torch.arange(-cfg.radius - 1, cfg.radius + 2, device=grey_l.device, dtype=torch.float32)
    k = offsets.numel()
    fields = base[0] + offsets.view(k, 1, 1)
    zncc = _zncc(grey_l, grey_r, mean_l, var_l, fields, win, _shift(cfg))
    # The offsets are sorted and rounding is monotonic, so the outermost two fields decide for all K.
    in_image = _samples_in_image(fields[[0, k - 1]])
    best_score, best = zncc.max(dim=1, keepdim=True)
    centre = best.clamp(1, k - 2)
    c_minus = zncc.gather(1, centre - 1)
    c_0 = zncc.gather(1, centre)
    c_plus = zncc.gather(1, centre + 1)
    curvature = c_minus - 2.0 * c_0 + c_plus  # < 0 at a proper maximum
    safe = torch.where(curvature < -1e-6, curvature, torch.full_like(curvature, -1.0))
    sub = ((c_minus - c_plus) / (2.0 * safe)).clamp(-0.5, 0.5)
    correction = (centre - (cfg.radius + 1)).float() + sub

    accept = (
        (best >= 1)
        & (best <= k - 2)
        & (curvature < -max(1e-6, cfg.min_peak_curvature))
        & (best_score >= cfg.min_zncc)
        & textured
        & in_image
        & torch.isfinite(disparity)
    )
    return torch.where(accept, disparity + correction, disparity), accept
