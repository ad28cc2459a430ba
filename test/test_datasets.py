"""Dataset readers (issue 23): small fixture folders in every layout, written here, parsed back.

Checked: PFM row order and the scale's sign (byte order), inf = unknown; KITTI uint16 / 256 with 0 unknown;
Middlebury half / quarter resolutions (the GT PFM is in px of its resolution; ``ndisp`` and the camera scale
by image width / calib width); masks; calibration files; SceneFlow splits and passes; Cityscapes labels
mapped to our classes; plain pair folders.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from scene_perception.data.datasets import (
    DatasetError,
    PFMError,
    open_dataset,
    read_pfm,
    read_rgb,
    write_pfm,
)
from scene_perception.data.datasets.cityscapes import map_cityscapes_labels
from scene_perception.data.datasets.middlebury import parse_calib
from scene_perception.data.world import CAR, PERSON, POLE, ROAD, SKY

RNG = np.random.default_rng(23)


def _rgb(h: int, w: int, value: int | None = None) -> np.ndarray:
    if value is not None:
        return np.full((h, w, 3), value, np.uint8)
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_rgb(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def _write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


# ----------------------------------------------------------------------------------------- PFM
def test_pfm_row_order_and_little_endian_by_hand(tmp_path: Path) -> None:
    # Written byte by byte: the first stored row is the *bottom* image row; scale -1 = little endian.
    rows_bottom_first = [[1.0, 2.0, 3.0], [4.0, 5.0, float("inf")]]
    data = b"".join(struct.pack("<3f", *r) for r in rows_bottom_first)
    (tmp_path / "d.pfm").write_bytes(b"Pf\n3 2\n-1.0\n" + data)
    d = read_pfm(tmp_path / "d.pfm")
    assert d.dtype == np.float32 and d.shape == (2, 3)
    np.testing.assert_array_equal(d, [[4.0, 5.0, np.inf], [1.0, 2.0, 3.0]])


def test_pfm_big_endian_positive_scale_and_header_whitespace(tmp_path: Path) -> None:
    # Positive scale = big endian; its magnitude (here 2.5) is not a disparity scale and is ignored.
    data = struct.pack(">2f", 7.5, -1.25) + struct.pack(">2f", 0.5, 100.0)
    (tmp_path / "b.pfm").write_bytes(b"Pf\n2\n2\n2.5\n" + data)  # width and height on separate lines
    np.testing.assert_array_equal(read_pfm(tmp_path / "b.pfm"), [[0.5, 100.0], [7.5, -1.25]])


def test_pfm_round_trip_grey_and_colour(tmp_path: Path) -> None:
    grey = RNG.normal(size=(5, 7)).astype(np.float32)
    grey[1, 2] = np.inf
    colour = RNG.normal(size=(4, 3, 3)).astype(np.float32)
    for little in (True, False):
        np.testing.assert_array_equal(read_pfm(write_pfm(tmp_path / f"g{little}.pfm", grey, little)), grey)
        back = read_pfm(write_pfm(tmp_path / f"c{little}.pfm", colour, little))
        np.testing.assert_array_equal(back, colour)
    assert (tmp_path / "gTrue.pfm").read_bytes().startswith(b"Pf\n7 5\n-1.0\n")


@pytest.mark.parametrize("content", [b"P6\n2 2\n-1\n" + b"\0" * 16, b"Pf\n2 2\n0\n" + b"\0" * 16,
                                     b"Pf\n2 2\n-1\n" + b"\0" * 15, b"Pf\n2", b"Pf\nx 2\n-1\n" + b"\0" * 16])
def test_pfm_malformed(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "bad.pfm").write_bytes(content)
    with pytest.raises(PFMError):
        read_pfm(tmp_path / "bad.pfm")


# ----------------------------------------------------------------------------------------- images
def test_read_rgb_colour_order_grey_and_16_bit(tmp_path: Path) -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # red
    _write_rgb(tmp_path / "c.png", rgb)
    np.testing.assert_array_equal(read_rgb(tmp_path / "c.png"), rgb)
    _write_png(tmp_path / "g.png", np.full((2, 3), 77, np.uint8))
    assert read_rgb(tmp_path / "g.png").shape == (2, 3, 3) and (read_rgb(tmp_path / "g.png") == 77).all()
    _write_png(tmp_path / "w.png", np.full((2, 2), 0xAB00 + 0x12, np.uint16))
    assert (read_rgb(tmp_path / "w.png") == 0xAB).all()


# ----------------------------------------------------------------------------------------- Middlebury
FULL_W, FULL_H = 64, 48
CALIB_F = (f"cam0=[100.5 0 30.25; 0 100.5 22.5; 0 0 1]\ncam1=[100.5 0 34.25; 0 100.5 22.5; 0 0 1]\n"
           f"doffs=4\nbaseline=176.25\nwidth={FULL_W}\nheight={FULL_H}\nndisp=40\nisint=0\nvmin=3\nvmax=35\n")


def _middlebury_scene(d: Path, w: int, h: int, calib: str, gt_name: str | None = "disp0GT.pfm",
                      mask: bool = True) -> np.ndarray:
    _write_rgb(d / "im0.png", _rgb(h, w))
    _write_rgb(d / "im1.png", _rgb(h, w))
    gt = np.tile(np.linspace(2.0, 30.0 * w / FULL_W, w, dtype=np.float32), (h, 1))
    gt[0, :5] = np.inf  # unknown
    if gt_name:
        write_pfm(d / gt_name, gt)
    if mask:
        m = np.full((h, w), 255, np.uint8)
        m[:, :3] = 128  # occluded
        m[0, :5] = 0  # unknown
        _write_png(d / "mask0nocc.png", m)
    (d / "calib.txt").write_text(calib)
    return gt


def test_calib_parse() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as t:
        (Path(t) / "calib.txt").write_text(CALIB_F.replace("=", " = ", 2))  # spaces around '=' too
        c = parse_calib(Path(t) / "calib.txt")
    assert c.ndisp == 40 and c.width == FULL_W and c.baseline_mm == 176.25
    np.testing.assert_array_equal(c.cam1[0], [100.5, 0, 34.25])
    cam = c.camera(FULL_W, FULL_H)
    assert cam is not None and cam.baseline == pytest.approx(0.17625) and cam.doffs == pytest.approx(4.0)


def test_middlebury_eval3_resolutions(tmp_path: Path) -> None:
    root = tmp_path / "MiddEval3"
    gts = {}
    for res, f in (("F", 1), ("H", 2), ("Q", 4)):
        gts[res] = _middlebury_scene(root / f"training{res}" / "Adirondack", FULL_W // f, FULL_H // f,
                                     CALIB_F)
    # A scene whose calib.txt is written for its own (half) size: ndisp is taken as it is.
    own = CALIB_F.replace(f"width={FULL_W}", f"width={FULL_W // 2}").replace(f"height={FULL_H}",
                                                                            f"height={FULL_H // 2}")
    own = own.replace("ndisp=40", "ndisp=20").replace("100.5", "50.25").replace("30.25", "15.125")
    own = own.replace("34.25", "17.125").replace("22.5", "11.25")
    _middlebury_scene(root / "trainingH" / "Jadeplant", FULL_W // 2, FULL_H // 2, own)
    _middlebury_scene(root / "testH" / "Australia", FULL_W // 2, FULL_H // 2, CALIB_F, gt_name=None,
                      mask=False)

    ds = open_dataset("middlebury", root)  # three resolutions: H is chosen, test (no GT) skipped
    assert [ds.item_name(i) for i in range(len(ds))] == ["trainingH/Adirondack", "trainingH/Jadeplant"]
    s = ds[0]
    assert s.left.shape == (FULL_H // 2, FULL_W // 2, 3) and s.left.dtype == np.uint8
    # The PFM is in px of H already: values as stored, inf -> NaN.
    assert np.isnan(s.disparity[0, :5]).all() and not np.isnan(s.disparity[1:]).any()
    np.testing.assert_array_equal(s.disparity[1:], gts["H"][1:])
    assert s.nonoccluded[5, 10] and not s.nonoccluded[5, 1] and not s.nonoccluded[0, 0]
    assert s.max_disparity == pytest.approx(20.0)  # ndisp 40 of the full-resolution calib, halved
    assert s.camera.width == FULL_W // 2 and s.camera.fx == pytest.approx(50.25)
    assert s.camera.baseline == pytest.approx(0.17625) and s.camera.doffs == pytest.approx(2.0)
    jade = ds[1]
    assert jade.max_disparity == pytest.approx(20.0) and jade.camera.fx == pytest.approx(50.25)

    q = open_dataset("middlebury", root, resolution="Q")
    assert len(q) == 1 and q[0].max_disparity == pytest.approx(10.0) and q[0].left.shape[1] == FULL_W // 4
    f = open_dataset("middlebury", root / "trainingF")  # pointing at one resolution needs no option
    assert len(f) == 1 and f[0].max_disparity == pytest.approx(40.0)
    np.testing.assert_array_equal(f[0].disparity[1:], gts["F"][1:])
    with pytest.raises(DatasetError, match="no GT"):
        open_dataset("middlebury", root / "testH")
    assert open_dataset("middlebury", root / "testH", require_gt=False)[0].disparity is None


def test_middlebury_2014_scene_folder(tmp_path: Path) -> None:
    # 2014 / 2021 full-size scenes: disp0.pfm, no mask0nocc.
    calib = CALIB_F.replace(f"width={FULL_W}", "width=40").replace(f"height={FULL_H}", "height=30")
    gt = _middlebury_scene(tmp_path / "2014" / "Piano-perfect", 40, 30, calib, "disp0.pfm", mask=False)
    ds = open_dataset("middlebury", tmp_path / "2014")
    s = ds[0]
    assert s.name == "Piano-perfect" and s.nonoccluded is None and s.max_disparity == 40
    np.testing.assert_array_equal(s.disparity[1:], gt[1:])
    one = open_dataset("middlebury", tmp_path / "2014" / "Piano-perfect")  # one scene directory
    assert len(one) == 1 and one[0].name == "Piano-perfect"


def test_eth3d_two_trees(tmp_path: Path) -> None:
    scene, gt_dir = tmp_path / "two_view_training" / "delivery_area_1l", tmp_path / "two_view_training_gt"
    _middlebury_scene(scene, 32, 20, CALIB_F.replace("ndisp=40", "ndisp=942"), gt_name=None, mask=False)
    gt = np.full((20, 32), 7.25, np.float32)
    gt[3, 4] = np.inf
    write_pfm(gt_dir / "delivery_area_1l" / "disp0GT.pfm", gt)
    m = np.full((20, 32), 255, np.uint8)
    m[5, 5] = 128
    _write_png(gt_dir / "delivery_area_1l" / "mask0nocc.png", m)
    for root in (tmp_path, tmp_path / "two_view_training"):
        ds = open_dataset("eth3d", root)
        assert len(ds) == 1
        s = ds[0]
        assert s.name.endswith("delivery_area_1l")
        assert np.isnan(s.disparity[3, 4]) and s.disparity[0, 0] == 7.25
        assert not s.nonoccluded[5, 5] and s.nonoccluded[0, 0]
        assert s.max_disparity is None  # ETH3D's ndisp (942 here) is too loose to be a range
        assert s.camera is not None


# ----------------------------------------------------------------------------------------- KITTI
P2 = "721.5377 0 609.5593 44.85728 0 721.5377 172.854 0.2163791 0 0 1 0.002745884"
P3 = "721.5377 0 609.5593 -339.5242 0 721.5377 172.854 2.199936 0 0 1 0.002729905"


def _kitti_disp(path: Path, d: np.ndarray) -> None:
    raw = np.where(np.isfinite(d), np.round(d * 256.0), 0).astype(np.uint16)
    _write_png(path, raw)


def test_kitti_2015(tmp_path: Path) -> None:
    t = tmp_path / "data_scene_flow" / "training"
    h, w = 12, 40
    occ = np.full((h, w), np.nan, np.float32)
    occ[4:, :] = 37.5  # 9600 / 256
    occ[5, 7] = 255.99609375  # 65535 / 256, the largest value
    noc = occ.copy()
    noc[4:6, :10] = np.nan  # occluded: known in disp_occ only
    for i in range(2):
        for frame in ("10", "11"):  # _11 (the flow frame) has no disparity GT and is ignored
            _write_rgb(t / "image_2" / f"00000{i}_{frame}.png", _rgb(h, w))
            _write_rgb(t / "image_3" / f"00000{i}_{frame}.png", _rgb(h, w))
        _kitti_disp(t / "disp_occ_0" / f"00000{i}_10.png", occ)
        _kitti_disp(t / "disp_noc_0" / f"00000{i}_10.png", noc)
    (t / "calib_cam_to_cam").mkdir()
    (t / "calib_cam_to_cam" / "000000.txt").write_text(
        f"calib_time: 09-Jan-2012 13:57:47\nS_rect_02: 1242 375\nP_rect_02: {P2}\nP_rect_03: {P3}\n")
    for root in (tmp_path / "data_scene_flow", t):
        ds = open_dataset("kitti2015", root)
        assert ds.name == "kitti2015" and [ds.item_name(i) for i in range(2)] == ["000000_10", "000001_10"]
    s = ds[0]
    assert s.disparity.dtype == np.float32 and np.isnan(s.disparity[:4]).all()
    assert s.disparity[4, 0] == 37.5 and s.disparity[5, 7] == pytest.approx(65535 / 256)
    assert not s.nonoccluded[4, 3] and s.nonoccluded[7, 3] and not s.nonoccluded[0, 20]
    assert s.camera.fx == pytest.approx(721.5377)
    assert s.camera.baseline == pytest.approx((44.85728 + 339.5242) / 721.5377)  # 0.5327 m
    assert ds[1].camera is None  # no calibration file for frame 1


def test_kitti_2012_grey_and_colour(tmp_path: Path) -> None:
    t = tmp_path / "training"
    d = np.full((6, 20), 3.0, np.float32)
    for sub in ("image_0", "image_1"):
        _write_png(t / sub / "000007_10.png", np.full((6, 20), 90, np.uint8))
    _kitti_disp(t / "disp_occ" / "000007_10.png", d)
    _kitti_disp(t / "disp_noc" / "000007_10.png", d)
    (t / "calib").mkdir()
    (t / "calib" / "000007.txt").write_text(
        "P0: 707.0912 0 601.8873 0 0 707.0912 183.1104 0 0 0 1 0\n"
        "P1: 707.0912 0 601.8873 -379.8145 0 707.0912 183.1104 0 0 0 1 0\n")
    s = open_dataset("kitti2012", tmp_path)[0]
    assert s.left.shape == (6, 20, 3) and (s.left == 90).all()  # grey replicated
    assert s.camera.baseline == pytest.approx(379.8145 / 707.0912)
    for sub in ("colored_0", "colored_1"):  # colour is preferred when both are there
        _write_rgb(t / sub / "000007_10.png", _rgb(6, 20, 200))
    assert (open_dataset("kitti2012", tmp_path)[0].left == 200).all()


# ----------------------------------------------------------------------------------------- SceneFlow
def _sceneflow_pair(subset: Path, pass_: str, rel: str, n: str, value: float) -> None:
    for side in ("left", "right"):
        _write_rgb(subset / f"frames_{pass_}pass" / rel / side / f"{n}.png", _rgb(6, 8))
    write_pfm(subset / "disparity" / rel / "left" / f"{n}.pfm", np.full((6, 8), value, np.float32))


def test_sceneflow_subsets_splits_passes(tmp_path: Path) -> None:
    ft = tmp_path / "FlyingThings3D"
    _sceneflow_pair(ft, "clean", "TRAIN/A/0000", "0006", 10.0)
    _sceneflow_pair(ft, "clean", "TEST/A/0000", "0006", 250.0)
    _sceneflow_pair(ft, "final", "TEST/A/0000", "0006", 250.0)
    _sceneflow_pair(tmp_path / "Monkaa", "clean", "a_rain_of_stones_x2", "0000", 20.0)
    _sceneflow_pair(tmp_path / "Driving", "clean", "15mm_focallength/scene_backwards/fast", "0000", 30.0)

    test = open_dataset("sceneflow", tmp_path)  # a TEST folder exists: the test split by default
    assert [test.item_name(i) for i in range(len(test))] == ["FlyingThings3D/TEST/A/0000/0006"]
    assert test.split == "test"
    s = test[0]
    assert s.max_disparity == 192 and s.max_evaluated_disparity == 192 and s.nonoccluded is None
    assert s.camera.fx == 1050 and s.camera.baseline == 1.0
    # The final pass is taken where a subset has it: the TRAIN pair exists only in the clean pass.
    assert len(open_dataset("sceneflow", tmp_path, split="train")) == 2  # Monkaa + Driving
    train = open_dataset("sceneflow", tmp_path, split="train", render_pass="clean")
    names = [train.item_name(i) for i in range(len(train))]
    assert names == ["Driving/15mm_focallength/scene_backwards/fast/0000", "FlyingThings3D/TRAIN/A/0000/0006",
                     "Monkaa/a_rain_of_stones_x2/0000"]
    assert train[0].camera.fx == 450 and float(train[1].disparity[0, 0]) == 10.0
    only_monkaa = open_dataset("sceneflow", tmp_path / "Monkaa")  # no TEST folder: everything
    assert only_monkaa.split == "all" and len(only_monkaa) == 1


# ----------------------------------------------------------------------------------------- Cityscapes
def test_cityscapes(tmp_path: Path) -> None:
    stem, split, city = "aachen_000000_000019", "val", "aachen"
    h, w = 8, 16
    _write_rgb(tmp_path / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _rgb(h, w))
    _write_rgb(tmp_path / "rightImg8bit" / split / city / f"{stem}_rightImg8bit.png", _rgb(h, w))
    raw = np.zeros((h, w), np.uint16)
    raw[2:, :] = 1 + 256 * 12 + 128  # (v - 1) / 256 = 12.5
    _write_png(tmp_path / "disparity" / split / city / f"{stem}_disparity.png", raw)
    ids = np.zeros((h, w), np.uint8)
    ids[0], ids[1], ids[2], ids[3], ids[4], ids[5] = 23, 7, 26, 25, 13, 17
    ids[6] = 28  # bus -> car
    _write_png(tmp_path / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
    cam = {"extrinsic": {"baseline": 0.209313}, "intrinsic": {"fx": 2262.52, "fy": 2265.3, "u0": 1096.98,
                                                               "v0": 513.137}}
    (tmp_path / "camera" / split / city).mkdir(parents=True)
    (tmp_path / "camera" / split / city / f"{stem}_camera.json").write_text(json.dumps(cam))
    s = open_dataset("cityscapes", tmp_path)[0]
    assert s.name == f"{city}/{stem}"
    assert np.isnan(s.disparity[:2]).all() and (s.disparity[2:] == 12.5).all()
    assert list(s.semantic[:7, 0]) == [SKY, ROAD, CAR, PERSON, 255, POLE, CAR] and s.semantic[7, 0] == 255
    assert s.camera.baseline == pytest.approx(0.209313) and s.camera.fx == pytest.approx(2262.52)
    with pytest.raises(DatasetError, match="nothing found"):
        open_dataset("cityscapes", tmp_path, split="train")
    assert map_cityscapes_labels(np.array([[24, 33, 0]], np.int32)).tolist() == [[PERSON, 255, 255]]


# ----------------------------------------------------------------------------------------- folder
def test_plain_folder_of_pairs(tmp_path: Path) -> None:
    _write_rgb(tmp_path / "seq" / "left" / "a.png", _rgb(4, 6))
    _write_rgb(tmp_path / "seq" / "right" / "a.png", _rgb(4, 6))
    _write_rgb(tmp_path / "left01.jpg", _rgb(4, 6))
    _write_rgb(tmp_path / "right01.jpg", _rgb(4, 6))
    _write_rgb(tmp_path / "x" / "0001_left.png", _rgb(4, 6))
    _write_rgb(tmp_path / "x" / "0001_right.png", _rgb(4, 6))
    _write_rgb(tmp_path / "m" / "im0.png", _rgb(4, 6))
    _write_rgb(tmp_path / "m" / "im1.png", _rgb(4, 6))
    _write_rgb(tmp_path / "lonely_left.png", _rgb(4, 6))  # no partner: not a pair
    ds = open_dataset("folder", tmp_path)
    assert [ds.item_name(i) for i in range(len(ds))] == ["left01", "m", "seq/a", "x/0001_left"]
    s = ds[2]
    assert s.disparity is None and s.left.shape == (4, 6, 3) and not s.has_gt


def test_unknown_and_empty(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset"):
        open_dataset("nyu", tmp_path)
    with pytest.raises(DatasetError, match="not a directory"):
        open_dataset("middlebury", tmp_path / "missing")
    for name in ("middlebury", "eth3d", "sceneflow", "cityscapes", "folder"):
        with pytest.raises(DatasetError, match="nothing found"):
            open_dataset(name, tmp_path)
    with pytest.raises(DatasetError, match="no left/right image folders"):
        open_dataset("kitti2015", tmp_path)


# ----------------------------------------------------------------------------------------- training
def test_dataset_specs() -> None:
    from scene_perception.training.dataset_mix import DatasetSpec, parse_dataset_specs

    assert parse_dataset_specs("kitti2015:/d/kitti:0.5, sceneflow:/d/sf;folder:C:/pairs") == [
        DatasetSpec("kitti2015", "/d/kitti", 0.5), DatasetSpec("sceneflow", "/d/sf", 1.0),
        DatasetSpec("folder", "C:/pairs", 1.0)]
    assert parse_dataset_specs(None) == []
    for bad in ("kitti2015", "nyu:/d", "kitti2015:/d:0", "kitti2015:/d:-1"):
        with pytest.raises(ValueError):
            parse_dataset_specs(bad)


def _shifted_scene(d: Path, shift: int, w: int = 96, h: int = 40) -> None:
    """A pair with left(x) = right(x - shift): GT = shift wherever x - shift is inside the right view."""
    x = np.arange(w + shift)
    texture = (128 + 100 * np.sin(x / 3.0) * np.cos(x / 7.0)).astype(np.uint8)
    wide = np.repeat(np.repeat(texture[None, :, None], h, 0), 3, 2)
    wide[:, :, 1] = np.roll(wide[:, :, 0], 5, axis=1)
    left, right = wide[:, :w], wide[:, shift:shift + w]  # right(x - shift) = wide(x) = left(x)
    _write_rgb(d / "im0.png", np.ascontiguousarray(left))
    _write_rgb(d / "im1.png", np.ascontiguousarray(right))
    gt = np.full((h, w), float(shift), np.float32)
    gt[:, :shift] = np.inf  # not visible in the right view
    write_pfm(d / "disp0GT.pfm", gt)


def test_dataset_crops_keep_the_geometry(tmp_path: Path) -> None:
    from scene_perception.training.dataset_mix import DatasetCrops

    _shifted_scene(tmp_path / "S", 30)
    reader = open_dataset("middlebury", tmp_path)
    s = reader[0]
    # The reader's pair really is left(x) = right(x - 30).
    np.testing.assert_array_equal(s.left[:, 40], s.right[:, 10])
    crops = DatasetCrops(reader, (16, 32), max_disparity=12.0, seed=3, length=5)
    for i in range(len(crops)):
        item = crops[i]
        left, right = item["left"].numpy(), item["right"].numpy()
        d, valid = item["disparity"][0].numpy(), item["valid"][0].numpy()
        assert left.shape == (3, 16, 32) and d.shape == (16, 32) and not np.isnan(d).any()
        # Shrunk by 12 / 30 to fit the range: GT 30 * (38 / 96) (the resized width ratio), same in both views.
        assert np.allclose(d[valid], 30 * 38 / 96) and (d[~valid] == 0).all()
        # Photometric check: the crop's left pixel matches the right pixel d to its left (same window).
        dd = int(round(float(d[valid][0])))
        ys, xs = np.nonzero(valid)
        xs_ok = xs[xs >= dd]
        if xs_ok.size:
            err = np.abs(left[:, ys[0], xs_ok] - right[:, ys[0], xs_ok - dd]).mean()
            assert err < 0.08
    # Deterministic per index (resuming and DDP ranks see the same item).
    for key in ("left", "disparity"):
        assert torch.equal(crops[2][key], crops[2][key])
    # Smaller than the crop: padded, the padding's GT invalid.
    big = DatasetCrops(reader, (64, 128), max_disparity=64.0, seed=0)[0]
    assert big["left"].shape == (3, 64, 128)
    assert not big["valid"][0, 40:].any() and not big["valid"][0, :, 96:].any()


def test_mixed_dataset_proportions_and_a_training_run(tmp_path: Path) -> None:
    from scene_perception.training.dataset_mix import MixedStereoDataset
    from scene_perception.training.stereo import TrainConfig, train_stereo

    a = [{"k": torch.tensor(0)}] * 3
    b = [{"k": torch.tensor(1)}] * 5
    mix = MixedStereoDataset([(a, 1.0), (b, 3.0)], length=4000, seed=1)
    picks = [mix.component_of(i) for i in range(4000)]
    assert abs(np.mean(picks) - 0.75) < 0.03 and picks == [mix.component_of(i) for i in range(4000)]
    assert int(mix[7]["k"]) == picks[7]

    for i in range(2):
        _shifted_scene(tmp_path / "data" / f"S{i}", 20 + 10 * i, w=160, h=72)
    cfg = TrainConfig(model="lite", steps=2, batch_size=2, crop_height=64, crop_width=128, max_disparity=24.0,
                      num_threads=1, progress=False, warmup_steps=0, out_dir=str(tmp_path / "run"),
                      dataset=f"middlebury:{tmp_path / 'data'}:3", synthetic_weight=1.0, augment=True)
    path = train_stereo(cfg)
    card = json.loads(path.with_suffix(".json").read_text())
    assert "middlebury:" in card["training"]["data"] and card["training"]["config"]["dataset"] == cfg.dataset
    with pytest.raises(ValueError, match="crops_per_pair"):
        TrainConfig(dataset=cfg.dataset, crops_per_pair=2, batch_size=2, image_height=512).validate()
    with pytest.raises(ValueError, match="synthetic_weight"):
        TrainConfig(synthetic_weight=0.0).validate()
    with pytest.raises(ValueError, match="checkpoint .* was trained with dataset"):
        train_stereo(TrainConfig(**{**cfg.__dict__, "steps": 3, "dataset": None}))


@pytest.mark.slow
def test_dataset_mix_under_torchrun_ddp(tmp_path: Path) -> None:
    """``train stereo --dataset`` under torchrun (2 ranks, gloo): unchanged code path, rank 0 writes a card
    that records the mix and world size 2 (the index-seeded sampler splits the mixed items across ranks)."""
    import subprocess
    import sys

    for i in range(2):
        _shifted_scene(tmp_path / "data" / f"S{i}", 20 + 10 * i, w=160, h=72)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "scene_perception.cli", "train", "stereo", "--steps", "2", "--batch-size", "1",
           "--crop-height", "64", "--crop-width", "128", "--max-disparity", "24", "--num-threads", "1",
           "--no-progress", "--dataset", f"middlebury:{tmp_path / 'data'}:3", "--out-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    card = json.loads((out / "lite.json").read_text())
    assert card["training"]["world_size"] == 2 and card["training"]["steps"] == 2
    assert "middlebury:" in card["training"]["data"]
