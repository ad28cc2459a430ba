"""Settings of the local refinement (:mod:`scene_perception.pipelines.local_refinement`), without torch.

Why a module of its own: the ROS parameter table (``ros/params.py``) takes its defaults from here, and every
node imports that table, the OpenCV-only SGBM node too; importing the refinement itself would load torch
into it (measured: ~1 s of start-up and ~190 MB of RSS it never uses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEFAULT_LOCAL_REFINEMENT", "ONE_PASS_PIXELS", "TWO_PASS_MEASURES", "TWO_PASS_PIXEL_LENGTHS",
           "LocalRefinementConfig"]

#: GT-free per-frame measures the two-pass factor may follow (``pipelines/view_agreement.py``).
TWO_PASS_MEASURES = ("none", "photometric", "noise", "zncc")
#: ``two_pass_std_pixel``: 3 weights and their centres, or its own base and exponent and 5 weights (with the
#: SGBM terms) and their centres (rule_pixel4.md), or 6 with the frame's median SGBM disagreement
#: (rule_pixel7.md).
TWO_PASS_PIXEL_LENGTHS = (6, 12, 14)
#: ``one_pass_std_pixels``: which pixels of a frame refined once the one-pass factor multiplies.
ONE_PASS_PIXELS = ("all", "changed")


@dataclass(frozen=True)
class LocalRefinementConfig:
    """Settings of :func:`~scene_perception.pipelines.local_refinement.refine_disparity_locally`.

    The defaults are the pipeline's, chosen on 200 validation pairs by rules written before each sweep ran
    (lowest EPE, then bad-2; ``benchmarks/local_refinement_sweep.py``, docs/refinement.md): the
    search settings over 216 without propagation, then propagation x iterations with them, then the
    uncertainty scale by AUSE; later the window shift (x window size), min ZNCC again, the border fill,
    and the scale with the correction floor (``correction_std``) by AUSE; last the SGBM candidate.

    Attributes:
        radius: largest integer correction searched, px at the input resolution (0 = sub-pixel only).
        window: side of the square ZNCC window, odd.
        min_zncc: a correction is applied only where the best ZNCC reaches this (-1 .. 1).
        min_texture: ... and where the left window's grey-level std (0..1 intensities) reaches this.
        min_x_texture: ... and, when > 0, where the RMS of the left window's horizontal grey derivative
            (``(I(x+1) - I(x-1)) / 2``, 0..1 intensities) reaches this.  Why: a window whose only structure
            is a horizontal edge has grey std but matches every horizontal shift alike (the aperture
            problem), so the grey-std gate lets arbitrary values through there; on a real chessboard the
            refinement made the network worse (docs/refinement.md).  0 = off; kept off by
            ``benchmarks/results/2026-12-06_cpu/refinement_rule/rule.md``: every threshold that helped the
            board or validation renders through a camera cost exact renders >= 0.04 px.
        min_x_share: ... and, when > 0, where the horizontal share of the left window's gradient energy,
            ``box(gx^2) / (box(gx^2) + box(gy^2))``, reaches this (0..1).  The same aperture test as
            ``min_x_texture`` without its contrast: isotropic texture gives about 0.5 at any contrast, a
            window holding only a horizontal edge about 0.  0 = off; kept off by ``rule2.md`` (exact
            renders >= 0.07 px worse at any share tried).
        min_x_snr: ... and, when > 0, where that RMS horizontal derivative reaches this many times the
            frame's noise std, estimated without GT from the left image
            (:func:`~scene_perception.pipelines.local_refinement.noise_std`).  Why: in a noisy view a weakly
            textured window's ZNCC peak is noise (noise of std sigma moves a shift estimated over N pixels by
            about sqrt(2) sigma / (RMS(gx) sqrt(N))), while a fixed threshold that suits a noisy camera
            throws away what an exact render supports.  0 = off; kept off by ``rule3.md`` (1: eligible but
            no gain on the board; 2: camera AUSE).  8 was the best setting tried on validation renders through
            a camera, but lost most of the refinement's gain on Aloe (docs/refinement.md).
        min_peak_curvature: a search correction is accepted only where the ZNCC scores around the best
            offset curve down by at least this: ``c(-1) - 2 c(0) + c(+1) <= -min_peak_curvature`` (scores
            per px of offset, as the search computes them).  0 = any maximum (curvature < -1e-6).  Why: the
            parabola's sub-pixel error grows as the score noise over the curvature, and a flat peak (smooth
            shading, a flat chessboard square with JPEG residue: a linear ramp scores the same at every
            shift) fixes no shift at all; on the real chessboard such corrections were most of the
            refinement's added error.  Propagation and the SGBM candidate are not affected.  0.2 was chosen
            by ``benchmarks/results/2026-12-07_cpu/refinement_rule/rule4.md`` (written first; 200
            validation pairs exact and through a camera, the board's 7 plane pairs at 640x480): board
            bad-2 against its plane 34.6 -> 23.7 %, camera renders 16.21 -> 12.84 % (the network alone:
            13.92), exact renders EPE 0.907 -> 0.920 px, bad-2 4.31 -> 4.25 %.
        iterations: rounds of (propagation, search), each starting from the previous round's result (so
            corrections can add up beyond ``radius``).
        propagation: 0 = off; p > 0 = before each search, try the disparities of the pixels p and 2p px
            away (left, right, up, down) and keep the one with the best ZNCC (same acceptance rules).
        window_shift: 0 = the ZNCC window is centred on the pixel; s > 0 = each candidate's score is the
            best over all windows whose centre is within s px (a "shiftable" window): near a depth edge
            the centred window straddles both surfaces and matches neither, while a window shifted onto
            the pixel's own side does.  Acts as at most ``window // 2``: a window shifted further does
            not contain the pixel, and on validation such shifts made every window size worse.
        fill_border: after the rounds, pixels whose disparity points left of the right image's edge
            (x - d < 0: seen by the left camera only, nothing to match) take the disparity of the nearest
            pixel to their right in the row that does match, continuing the surface inwards instead of
            trusting the network's guess; their std is left as the network's.
        uncertainty_scale: the pipeline multiplies the network's disparity std by this where the refinement
            changed the disparity: the network predicted the error of *its* estimate, and a correction that
            passed the photometric checks is more accurate than that (fitted on the validation split, by
            AUSE). Disparities do not depend on it.
        correction_std: the std of a pixel whose disparity the refinement moved by ``delta`` px (matching or
            border fill) is at least ``correction_std * |delta|``: a large correction means the network
            and the matching disagreed, and either may be wrong (0 = off; fitted with the scale, by AUSE).
            Disparities do not depend on it.  The frame's one-pass or two-pass factor then multiplies the
            floored std, so the published floor is that factor times this (the one-pass factor can be 0.5
            on clean views, ``one_pass_std_min_factor``).
        two_pass_std_factor: when the scene needs more range than the network's and the pipeline refines
            twice (at network scale, then at full size), the whole published std map of the frame is
            multiplied by this after the second refinement.  Why: each refinement applies
            ``uncertainty_scale`` to the pixels it changed, so most pixels get it squared and the std
            became over-confident (validation above the range: 2-std coverage 83 %, Aloe at full size
            54 %).  A uniform factor keeps the order of the stds (AUSE unchanged) and only fixes their
            size; fitted on the validation split by a rule written first
            (``benchmarks/results/2026-12-05_cpu/calibration_two_pass_rule.md``; 60 pairs with max disparity
            192 and 256: within 1 / 2 / 3 std 68.7 / 84.3 / 90.4 % -> 78.5 / 90.4 / 94.2 % at 1.5, AUSE
            0.164 either way).  The one-refinement path never uses it.  Disparities do not depend on it.
            Since 2026-12-06 it is the base of a per-frame factor (next three fields; 1.5 was the constant).
        two_pass_std_measure: ``none`` = the factor above for every two-refinement frame; otherwise a
            GT-free measure of the frame's view agreement (``TWO_PASS_MEASURES``,
            ``pipelines/view_agreement.py``) sets a factor per frame:
            ``clip(two_pass_std_factor * (m / two_pass_std_reference) ** two_pass_std_exponent, 1, 6)``.
            Why: a camera's gain, bias and noise make the second refinement's corrections less exact than
            on clean renders, so one constant is either too small for real views or too large for clean
            ones.  Per frame, ``zncc`` (median 1 - ZNCC at the refined disparity), base 3.35, reference
            0.09351, exponent 0.25 was chosen on 180 validation frames (exact, with nuisance, and with
            nuisance and the camera effects of ``data/augment.py: VIEW_EFFECTS``) by the rule
            ``benchmarks/results/2026-12-06_cpu/two_pass_adaptive/rule_camera.md``; within 1 / 2 / 3 std at
            the constant 1.5: exact 78.5 / 90.4 / 94.2 %, nuisance 58.7 / 77.9 / 88.6 %; then 82.3 / 92.7 /
            95.5, 84.6 / 94.4 / 96.2 and camera 77.2 / 90.0 / 93.3 %.  With the SGBM candidate the default
            is per pixel (``two_pass_std_pixel``): ``rule_pixel4.md`` (81.3 / 92.9 / 96.2, 81.1 / 93.6 /
            96.1 and 75.2 / 90.0 / 94.0 % on the same frames, pooled AUSE 0.180 -> 0.165, but more
            over-confident on the real pairs: Aloe full input 2 std 85.5 -> 78.2 %); since
            ``rule_pixel8.md`` rule_pixel6.md's refit with a fourth condition, ``rig`` (a rig's sub-pixel
            residual), chosen among four fitted settings with real camera pairs without GT among the
            validation conditions (the opencv-doc chessboard, its plane as the reference,
            ``benchmarks/chessboard_planes.py``): 80.6 / 92.5 / 96.1, 84.9 / 95.1 / 97.2, 79.8 / 92.1 / 95.3,
            rig 76.3 / 90.0 / 94.4 and chessboard 82.9 / 94.6 / 97.3 % (rule_pixel4's: rig 71.3 / 87.1 /
            92.6, chessboard 69.8 / 85.0 / 91.5), pooled AUSE 0.179 -> 0.162.  Costs one ZNCC pass at full
            size per two-refinement frame.
        two_pass_std_reference: the measure's value at which the factor is ``two_pass_std_factor`` (> 0).
        two_pass_std_exponent: how fast the factor grows with the measure (0 = constant factor).
        two_pass_std_pixel: empty = one factor per frame (above); else ``(w1, w2, w3, z0, t0, c0)`` or
            ``(base, exponent, w1, .., w5, z0, t0, c0, h0, g0)``: a factor per pixel that also follows what
            the matching shows there (``view_agreement.py: two_pass_log_factor``; 1 - ZNCC, texture and the
            second pass's correction, log-scaled and centred on ``z0, t0, c0``; the 12-number form adds
            SGBM's verdict: no answer, and the log disagreement with the refined disparity where it
            answered, and carries its own base and exponent in place of the per-frame fields'; the
            14-number form adds, as a sixth weight and centre ``m0``, the frame's median of that log
            disagreement: how far two independent matchers part on this frame, a GT-free reading of its
            sub-pixel noise, ``rule_pixel7.md``); applies only with ``two_pass_std_measure`` ``zncc``
            (another measure, or ``none``, switches it off), the 12- and 14-number forms only when the second
            refinement had an SGBM candidate: without one (a GPU engine without ``sgbm_on_accelerator``) the
            frame gets the per-frame factor of the fields above.
        two_pass_std_floor: px; where the per-pixel factor applies, the published std becomes
            ``sqrt((factor std)^2 + floor^2)``: the sub-pixel residual a real rig keeps after rectification,
            which no render has (``rule_pixel5.md``; measured on the opencv-doc chessboard rig: 0.275 px).
            0 = none.  Monotone in the std, so it leaves the order of the pixels (AUSE) alone.
        two_pass_row_floor, two_pass_row_noise: for a frame refined twice, a floor that follows the rig:
            after the two-pass steps above the std becomes ``sqrt(std^2 + F^2)``, ``F = a * sqrt(max(r^2 -
            r0^2, 0))``, ``a`` = ``two_pass_row_floor`` (0 = off, 0 .. 10), ``r0`` = ``two_pass_row_noise``
            (px, 0 .. 5: the estimator's own spread), ``r`` the frame's GT-free row residual
            (``quality.row_residual``: the spread of the vertical offsets of matched corners at the refined
            disparity; no floor when unknown).  Why: a real rig keeps a residual after rectification that
            varies over the image and that no render has; its vertical half is measurable, and stands for
            the size of the horizontal half, which reads as disparity
            (``benchmarks/results/2026-12-07_cpu/two_pass_row/rule.md``).  Off by its rule: on validation no
            floor brought the shares nearer the Laplace's, and the Middlebury pairs read ``r`` 0.09-0.10 px,
            like exact renders (docs/calibration.md); for a rig known to keep a varying residual.
        two_pass_scale_exponent, two_pass_scale_reference: for a frame refined twice, after every step
            above, the std is multiplied by ``(s / s_ref)^e``, ``s`` the scale the network ran at
            (``StereoDepthResult.scale``), ``e`` = ``two_pass_scale_exponent`` (0 = off, 0 .. 5), ``s_ref`` =
            ``two_pass_scale_reference`` (0 .. 1].  Why: the first refinement's std is in network pixels
            and the upsampling multiplies it by 1 / s, while the second refinement's update is the same at
            every scale; the settings above were fitted at scales 0.5 and 0.667 only, and at 0.889 (a scene
            just beyond the network's range) validation renders were published too narrow
            (``benchmarks/results/2026-12-07_cpu/two_pass_scale/rule.md``).  Fitted: ``e`` 0.25, ``s_ref``
            0.5 (a frame at scale 0.889 x 1.155, at 0.667 x 1.075, at 0.5 unchanged); summed goal violation
            over 16 validation cells and the board 0.370 -> 0.173, the board unchanged.
        two_pass_changed_scale, two_pass_unchanged_scale: after the two-pass factor, the std of a frame
            refined twice is multiplied by the first where the second refinement changed the disparity and
            by the second elsewhere (0 .. 4] and (0 .. 1].  Why: with the sharp-peak refinement the pixels
            the second refinement left alone were far too wide (validation renders 95-97 % within 1 std,
            the chessboard 96 %) while the changed ones were narrow (board 91 % within 2 std;
            ``benchmarks/results/2026-12-07_cpu/two_pass_split/rule.md``).
        one_pass_std_measure: for frames refined once (the network at full scale: the common case), multiply
            the std map (every pixel, or with ``one_pass_std_pixels`` ``changed`` those the refinement
            changed) by ``clip(one_pass_std_factor * (m / one_pass_std_reference) ** one_pass_std_exponent,
            one_pass_std_min_factor, 6)``, ``m`` that GT-free measure of the frame after the refinement
            (``view_agreement.MEASURES``); ``none`` = off (factor 1).  Why: the refinement's std update was
            fitted on photometrically exact renders, and through a camera's effects the frames it refined
            once held only 70.8 % of their errors within 2 std, and real chessboard pairs 68.5 %.
            ``benchmarks/results/2026-12-07_cpu/one_pass_std/rule.md`` chose ``zncc`` and a factor on every
            pixel, ``clip(2.0 (m / 0.082897)^0.2, 1, 6)``; after ``min_peak_curvature`` left more pixels
            alone, ``one_pass_refit/rule.md`` refitted it on validation renders to the default,
            ``clip(1.85 (m / 0.082897)^0.3, 0.5, 6)`` on the changed pixels and 0.95 on the others: 2-std
            shares exact / nuisance / camera / rig 95.2 / 96.6 / 94.1 / 92.4 -> 91.8 / 94.6 / 92.1 / 90.0 %,
            1-std 86.5 / 85.9 / 80.6 / 76.0 -> 77.0 / 81.6 / 76.3 / 71.3 % (Laplace 75.7), the chessboard
            95.5 -> 94.5 % within 2 std, AUSE + 0.6 %.
        one_pass_std_reference, one_pass_std_factor, one_pass_std_exponent: that factor's ``m_ref`` (> 0),
            ``f0`` (> 0) and ``b`` (0 .. 10).
        one_pass_std_pixels: ``all`` = the one-pass factor multiplies the whole std map; ``changed`` = only
            the pixels the refinement changed.  Why: the factor stands for how far the refinement's
            corrections can be trusted through a camera; where the refinement left the network's disparity
            alone the network's own std was already near honest, and the factor widened it (2-std share
            99.1 % there through a camera, ``one_pass_refit/rule.md``).
        one_pass_std_min_factor: the one-pass factor's lower clip (0 .. 1]: below 1 lets clean frames'
            corrections be published narrower than ``uncertainty_scale`` alone makes them.
        one_pass_unchanged_scale: (0 .. 1], multiplies the std of the pixels a single refinement left
            unchanged (after the floor, and times the factor in the ``all`` form): those pixels keep the
            network's own std, whose size the refinement's update never touched (fitted: 0.95).
        occlusion_std_scale: >= 1, multiplies the published std (after the one- or two-pass steps) where
            the refined disparity, by the ordering constraint (``pipelines/occlusion.py``), is hidden from
            the right camera: such a pixel has no photometric evidence, its value is the network's guess.
            Why: every other std step was fitted on non-occluded pixels, and on validation renders the
            occluded published pixels held 57-80 % of their errors within 2 std
            (``benchmarks/results/2026-12-07_cpu/occluded_pixels/rule.md``).  1 = off.
        max_view_residual: 0 = off. Otherwise a frame whose median 1 - ZNCC at the network's own disparity
            (window ``window``, textured pixels; at the network's resolution) exceeds this is not refined at
            all: the network's output and std are published as they are. Why: through a camera's effects and
            on the real chessboard the refinement adds error, and this measure tells such frames from clean
            views (validation probe).  Kept off by its rule
            (``benchmarks/results/2026-12-07_cpu/refinement_gate/rule.md``, run 2026-12-07): every
            threshold won 31 points of summed bad-2 on camera, rig and the board, but lost on renders with a
            photometric nuisance (where the refinement helps) and, on exact renders, on one frame whose
            network output failed on a repetitive pattern (a high residual there means the network is
            wrong, which the refinement fixes).
        sgbm_candidate: before the rounds, offer every pixel OpenCV SGBM's disparity (the project's
            baseline matcher, ``pipelines/sgbm.py``, over the network's range) and let it take that value
            where SGBM answered (it passed SGBM's uniqueness and speckle checks) and its ZNCC beats the
            current value's and reaches ``min_zncc`` on a textured window.  Why: most of the network's
            remaining error is a few gross mistakes (a wrong surface tens of px off) that a local search
            cannot reach, while SGBM, sparse but rarely grossly wrong where it answers, often has the
            right value there (validation, 200 pairs: EPE 1.25 -> 0.99 px, AUSE 0.31 -> 0.25).  Costs one
            SGBM run on the CPU (about 25 ms at 512x256 and 22 ms at 320x240 on 2 cores).
        candidate_far_px, candidate_far_margin: where the SGBM candidate lies more than ``candidate_far_px``
            from the current disparity, it is taken only if its ZNCC beats the current value's by at least
            ``candidate_far_margin`` (0 = off: any win).  Why: on a repetitive pattern (the real
            chessboard's squares) SGBM's wrong period scores about as well as the right one, and such
            adoptions, 30-120 px off, were most of the refinement's added error on the board.  Off by
            default: with m 0.1, J 8 (``benchmarks/candidate_margin.py``) board bad-2 23.7 -> 17.1 %
            (the network alone: 19.2) and camera renders a little better, but exact renders +0.08 px EPE
            (a gross network error on a repetitive texture is also fixed by a candidate that wins by a
            hair) and Aloe +0.15 point; no rule was run (docs/refinement.md).
        sgbm_on_accelerator: also offer the SGBM candidate when the engine runs on a GPU. Off by default,
            by the rule written before the first GPU run (docs/gpu.md: keep it only if the whole pipeline at
            960x576, bf16 + CUDA graphs, reaches 30 fps with it): on an H200 it took 96 of the frame's 110 ms
            (9 fps; 72 fps without it), since SGBM runs on the CPU. Turning it on buys the accuracy above.
    """

    radius: int = 3
    window: int = 7
    min_zncc: float = 0.7
    min_texture: float = 0.005
    min_x_texture: float = 0.0
    min_x_share: float = 0.0
    min_x_snr: float = 0.0
    min_peak_curvature: float = 0.2
    iterations: int = 3
    propagation: int = 4
    window_shift: int = 3
    fill_border: bool = True
    uncertainty_scale: float = 0.25
    correction_std: float = 0.3
    # Fitted on validation renders: exact, with a camera's nuisance, and through its effects.  Per frame
    # (rule_camera.md; rule.md chose 2.15, 0.041566, 0.1 from the first two), the setting without an SGBM
    # candidate; per pixel with SGBM's verdict with one: rule_pixel6.md's refit with the rig condition,
    # chosen by rule_pixel8.md (chessboard pairs among the validation conditions) over rule_pixel4.md's
    # (shipped before) and rule_pixel7.md's 14 numbers (shipped for an hour on 2026-12-06).
    two_pass_std_factor: float = 3.35
    two_pass_std_measure: str = "zncc"
    two_pass_std_reference: float = 0.09351
    two_pass_std_exponent: float = 0.25
    two_pass_std_pixel: tuple[float, ...] = (2.8475, 0.190792,  # base, exponent
                                             0.065798, 0.263812, -0.026041, 1.196897, 0.291425,  # weights
                                             -2.242783, -4.078694, -1.284322, 0.0, -0.857391)  # centres
    two_pass_std_floor: float = 0.0
    # benchmarks/results/2026-12-07_cpu/two_pass_split/rule.md (fit.txt beside it): the changed pixels kept.
    two_pass_changed_scale: float = 1.0
    two_pass_unchanged_scale: float = 0.35
    two_pass_row_floor: float = 0.0
    two_pass_row_noise: float = 0.0
    # benchmarks/results/2026-12-07_cpu/two_pass_scale/rule.md (fit.txt beside it): validation renders at
    # ranges 144-256 (scales 0.889-0.5) and the chessboard; e 0 was today.
    two_pass_scale_exponent: float = 0.25
    two_pass_scale_reference: float = 0.5
    # Fitted on validation renders (exact, nuisance, camera, rig) and kept by the real chessboard pairs
    # refined once: benchmarks/results/2026-12-07_cpu/one_pass_std/rule.md chose the measure and m_ref, and
    # after min_peak_curvature one_pass_refit/rule.md the rest (fit.txt beside each).
    one_pass_std_measure: str = "zncc"
    one_pass_std_reference: float = 0.082897
    one_pass_std_factor: float = 1.85
    one_pass_std_exponent: float = 0.3
    one_pass_std_pixels: str = "changed"
    one_pass_std_min_factor: float = 0.5
    one_pass_unchanged_scale: float = 0.95
    occlusion_std_scale: float = 1.0
    max_view_residual: float = 0.0
    sgbm_candidate: bool = True
    candidate_far_px: float = 8.0
    candidate_far_margin: float = 0.0
    sgbm_on_accelerator: bool = False

    def __post_init__(self) -> None:
        if self.radius < 0:
            raise ValueError(f"radius must be >= 0, got {self.radius}")
        if self.window < 3 or self.window % 2 == 0:
            raise ValueError(f"window must be odd and >= 3, got {self.window}")
        if not -1.0 <= self.min_zncc <= 1.0:
            raise ValueError(f"min_zncc must be in [-1, 1], got {self.min_zncc}")
        if self.min_texture < 0:
            raise ValueError(f"min_texture must be >= 0, got {self.min_texture}")
        if not 0.0 <= self.min_x_texture <= 1.0:
            raise ValueError(f"min_x_texture must be in [0, 1], got {self.min_x_texture}")
        if not 0.0 <= self.min_x_share <= 1.0:
            raise ValueError(f"min_x_share must be in [0, 1], got {self.min_x_share}")
        if not 0.0 <= self.min_x_snr <= 1000.0:
            raise ValueError(f"min_x_snr must be in [0, 1000], got {self.min_x_snr}")
        if not 0.0 <= self.min_peak_curvature <= 4.0:
            raise ValueError(f"min_peak_curvature must be in [0, 4], got {self.min_peak_curvature}")
        if not 0.0 <= self.candidate_far_px <= 10000.0:
            raise ValueError(f"candidate_far_px must be in [0, 10000], got {self.candidate_far_px}")
        if not 0.0 <= self.candidate_far_margin <= 2.0:
            raise ValueError(f"candidate_far_margin must be in [0, 2], got {self.candidate_far_margin}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.propagation < 0:
            raise ValueError(f"propagation must be >= 0, got {self.propagation}")
        if self.window_shift < 0:
            raise ValueError(f"window_shift must be >= 0, got {self.window_shift}")
        if not 0.0 < self.uncertainty_scale <= 1.0:
            raise ValueError(f"uncertainty_scale must be in (0, 1], got {self.uncertainty_scale}")
        if self.correction_std < 0:
            raise ValueError(f"correction_std must be >= 0, got {self.correction_std}")
        if not 0.0 < self.two_pass_std_factor < float("inf"):
            raise ValueError(f"two_pass_std_factor must be finite and > 0, got {self.two_pass_std_factor}")
        if self.two_pass_std_measure not in TWO_PASS_MEASURES:
            raise ValueError(f"two_pass_std_measure must be one of {TWO_PASS_MEASURES}, "
                             f"got {self.two_pass_std_measure!r}")
        if not 0.0 < self.two_pass_std_reference < float("inf"):
            raise ValueError(f"two_pass_std_reference must be finite and > 0, "
                             f"got {self.two_pass_std_reference}")
        pixel = self.two_pass_std_pixel
        if pixel and (len(pixel) not in TWO_PASS_PIXEL_LENGTHS or not all(math.isfinite(v) for v in pixel)):
            raise ValueError(f"two_pass_std_pixel must be empty or 6, 12 or 14 finite numbers, got {pixel}")
        if len(pixel) >= 12 and not (pixel[0] > 0.0 and 0.0 <= pixel[1] <= 10.0):
            raise ValueError(f"two_pass_std_pixel's base must be > 0 and its exponent in [0, 10], "
                             f"got {pixel[:2]}")
        if not 0.0 <= self.two_pass_std_floor <= 10.0:
            raise ValueError(f"two_pass_std_floor must be in [0, 10] px, got {self.two_pass_std_floor}")
        if not 0.0 <= self.two_pass_std_exponent <= 10.0:
            raise ValueError(f"two_pass_std_exponent must be in [0, 10], got {self.two_pass_std_exponent}")
        if not 0.0 < self.two_pass_changed_scale <= 4.0:
            raise ValueError(f"two_pass_changed_scale must be in (0, 4], got {self.two_pass_changed_scale}")
        if not 0.0 < self.two_pass_unchanged_scale <= 1.0:
            raise ValueError(f"two_pass_unchanged_scale must be in (0, 1], "
                             f"got {self.two_pass_unchanged_scale}")
        if not 0.0 <= self.two_pass_scale_exponent <= 5.0:
            raise ValueError(f"two_pass_scale_exponent must be in [0, 5], got {self.two_pass_scale_exponent}")
        if not 0.0 < self.two_pass_scale_reference <= 1.0:
            raise ValueError(f"two_pass_scale_reference must be in (0, 1], "
                             f"got {self.two_pass_scale_reference}")
        if not 0.0 <= self.two_pass_row_floor <= 10.0:
            raise ValueError(f"two_pass_row_floor must be in [0, 10], got {self.two_pass_row_floor}")
        if not 0.0 <= self.two_pass_row_noise <= 5.0:
            raise ValueError(f"two_pass_row_noise must be in [0, 5] px, got {self.two_pass_row_noise}")
        if self.one_pass_std_measure not in TWO_PASS_MEASURES:
            raise ValueError(f"one_pass_std_measure must be one of {TWO_PASS_MEASURES}, "
                             f"got {self.one_pass_std_measure!r}")
        for name in ("one_pass_std_reference", "one_pass_std_factor"):
            if not 0.0 < getattr(self, name) < float("inf"):
                raise ValueError(f"{name} must be finite and > 0, got {getattr(self, name)}")
        if not 0.0 <= self.one_pass_std_exponent <= 10.0:
            raise ValueError(f"one_pass_std_exponent must be in [0, 10], got {self.one_pass_std_exponent}")
        if self.one_pass_std_pixels not in ONE_PASS_PIXELS:
            raise ValueError(f"one_pass_std_pixels must be one of {ONE_PASS_PIXELS}, "
                             f"got {self.one_pass_std_pixels!r}")
        for name in ("one_pass_std_min_factor", "one_pass_unchanged_scale"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not 1.0 <= self.occlusion_std_scale <= 100.0:
            raise ValueError(f"occlusion_std_scale must be in [1, 100], got {self.occlusion_std_scale}")
        if not 0.0 <= self.max_view_residual <= 2.0:
            raise ValueError(f"max_view_residual must be in [0, 2] (0 = off), got {self.max_view_residual}")


#: What the pipeline (and so the node, the CLI and the benchmarks) does by default: chosen on the validation
#: split by ``benchmarks/local_refinement_sweep.py`` (docs/refinement.md).
DEFAULT_LOCAL_REFINEMENT = LocalRefinementConfig()
