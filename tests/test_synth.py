"""Synthetic scene generator: determinism, label/pixel alignment, georeferencing, options."""

import subprocess
import sys
from collections import Counter

import cv2
import numpy as np
import pytest
import rasterio
from omegaconf import OmegaConf

from detector.atomic import sha256_file
from detector.errors import DetectorError
from detector.geometry import corners_to_obb, map_to_pixel
from detector.labels import read_geojson, to_pixel
from detector.synth import default_config, generate_scene, write_scenes

CLASSES = ["freight_car", "covered_car", "tank_car", "locomotive"]


def small(**over):
    """A small, busy scene config (defaults overlaid)."""
    cfg = default_config()
    base = {"size": [384, 384], "vehicles": {"min": 40, "max": 60, "empty_prob": 0.0},
            "yard": {"tracks": [6, 10]}}
    return OmegaConf.merge(cfg, base, over)


def label_mask(scene):
    h, w = scene.body_mask.shape
    mask = np.zeros((h, w), np.uint8)
    for poly in scene.labels:
        pix = map_to_pixel(poly.corners, scene.transform)
        cv2.fillPoly(mask, [np.round((pix - 0.5) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return mask.astype(bool)


def test_same_arguments_give_byte_identical_files(tmp_path):
    runs = []
    for name, n in (("a", 2), ("b", 2), ("c", 1)):
        cfg = small(out=str(tmp_path / name), n_scenes=n, seed=7, render=True, render_crop=200)
        paths = write_scenes(cfg)
        assert [p.name for p in paths] == [f"scene_{i:03d}.tif" for i in range(n)]
        runs.append({f.name: sha256_file(f) for f in sorted((tmp_path / name).iterdir())})
    assert runs[0] == runs[1]
    assert set(runs[0]) == {f"scene_00{i}.{e}" for i in range(2) for e in ("tif", "geojson", "png")}
    # Scene 0 does not depend on how many scenes the run makes; scenes differ from each other.
    assert runs[2] == {k: v for k, v in runs[0].items() if k.startswith("scene_000")}
    assert runs[0]["scene_000.tif"] != runs[0]["scene_001.tif"]


def test_labels_align_with_drawn_bodies():
    scene = generate_scene(small(), seed=3)
    assert len(scene.labels) >= 20
    labels = label_mask(scene)
    inter = (labels & scene.body_mask).sum()
    union = (labels | scene.body_mask).sum()
    assert inter / union > 0.8
    # A half-car shift would break alignment: the test can fail.
    shifted = np.roll(labels, 4, axis=1)
    assert (shifted & scene.body_mask).sum() / (shifted | scene.body_mask).sum() < 0.8


def test_crs_transform_and_labels_round_trip(tmp_path):
    cfg = small(out=str(tmp_path), n_scenes=1, seed=1)
    tif = write_scenes(cfg)[0]
    scene = generate_scene(cfg, seed=__import__("detector.synth").synth.scene_seed(1, 0))
    with rasterio.open(tif) as src:
        assert src.crs == scene.crs and src.crs.is_projected
        assert 32601 <= src.crs.to_epsg() <= 32760  # UTM
        assert src.transform.almost_equals(scene.transform)
        assert src.transform.a == pytest.approx(0.5) and src.transform.e == pytest.approx(-0.5)
        assert src.profile["tiled"] and src.profile["compress"] == "deflate"
        assert np.array_equal(src.read(), scene.image)
        polys, file_crs = read_geojson(tif.with_suffix(".geojson"), CLASSES)
        pix = to_pixel(polys, file_crs, src.crs, src.transform, tif)
    assert file_crs == scene.crs and len(pix) == len(scene.labels)
    for p, q in zip(pix, scene.labels, strict=True):
        assert np.allclose(p.corners, map_to_pixel(q.corners, scene.transform), atol=0.01)
        assert p.cls == q.cls


def test_m_per_px_scales_car_pixel_lengths():
    medians, areas = {}, {}
    for m in (0.3, 0.6):
        only_freight = {"freight_car": 1.0, "covered_car": 0.0, "tank_car": 0.0,
                        "locomotive": 0.0}
        scene = generate_scene(small(m_per_px=m, class_mix=only_freight,
                                     randomised={"sensor": {"scale_jitter": 1.0}}), seed=5)
        pix = [map_to_pixel(p.corners, scene.transform) for p in scene.labels]
        lengths = np.array([corners_to_obb(c)[2] for c in pix])
        assert np.all((lengths * m > 11.9) & (lengths * m < 17.1))  # metres, freight cars
        medians[m] = np.median(lengths)
        areas[m] = scene.body_mask.sum() / len(pix)
    assert medians[0.3] / medians[0.6] == pytest.approx(2.0, rel=0.15)
    assert areas[0.3] / areas[0.6] == pytest.approx(4.0, rel=0.3)


def test_class_mix_follows_configured_proportions():
    mix = {"freight_car": 0.5, "covered_car": 0.25, "tank_car": 0.15, "locomotive": 0.1}
    cfg = small(size=[640, 640], supersample=1, class_mix=mix,
                vehicles={"min": 180, "max": 180}, yard={"tracks": [14, 18]})
    counts: Counter = Counter()
    for seed in range(3):
        counts.update(p.cls for p in generate_scene(cfg, seed).labels)
    total = sum(counts.values())
    assert total > 300
    for cls, p in mix.items():
        assert counts[cls] / total == pytest.approx(p, abs=0.06), counts


def test_uint16_nir_and_nodata_margin_read_back(tmp_path):
    cfg = small(out=str(tmp_path), dtype="uint16", nir=True, nodata_margin=True)
    tif = write_scenes(cfg)[0]
    with rasterio.open(tif) as src:
        data = src.read()
        assert src.count == 4 and data.dtype == np.uint16
        assert src.nodata == 0
        valid = src.read_masks(1) > 0
    assert data.max() <= 2047 and data.max() > 255  # 11-bit values, not 8-bit ones
    assert 0.5 < valid.mean() < 0.99  # a rotated footprint leaves nodata margins
    assert not valid[0, 0] and not valid[-1, -1] or not valid[0, -1]
    assert np.all(data[:, ~valid] == 0)
    assert np.all(data[:, valid] > 0)


def test_empty_yard_and_bad_config(tmp_path):
    scene = generate_scene(small(vehicles={"empty_prob": 1.0}), seed=0)
    assert scene.labels == [] and not scene.body_mask.any()
    with pytest.raises(DetectorError, match="dtype"):
        generate_scene({"dtype": "float32"}, seed=0)


def test_cli_writes_scenes_from_any_directory(tmp_path):
    out = tmp_path / "s"
    result = subprocess.run(
        [sys.executable, "-m", "detector.synth", f"out={out}", "n_scenes=1", "seed=0",
         "size=[256,256]"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (out / "scene_000.tif").exists() and (out / "scene_000.geojson").exists()
    bad = subprocess.run([sys.executable, "-m", "detector.synth", f"out={out}", "dtype=int8"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
