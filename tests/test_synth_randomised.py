"""Domain randomisation, hard negatives, the classic look, and site/day seeds."""

import colorsys
import hashlib

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

from detector.errors import DetectorError
from detector.geometry import corners_to_obb, map_to_pixel
from detector.raster import scene_stretch
from detector.synth import appearance, default_config, generate_scene
from detector.synth.negatives import COACH, place_coaches

BUSY = {"size": [384, 384], "vehicles": {"min": 40, "max": 60, "empty_prob": 0.0},
        "yard": {"tracks": [6, 10]}}


def cfg(**over):
    return OmegaConf.merge(default_config(), BUSY, over)


def digest(scene) -> str:
    return hashlib.sha256(scene.image.tobytes()).hexdigest()


def test_classic_look_is_unchanged_golden():
    """appearance=classic without negatives reproduces the first generator byte for byte."""
    scene = generate_scene({"appearance": "classic", "negatives": {"enabled": False},
                            "size": [400, 400], "vehicles": {"min": 20, "max": 30}}, 7)
    assert len(scene.labels) == 22
    assert digest(scene) == "dc49e7b3eaf9825fad55eb03514de3c0d1814de654bce12db32c7de8a8532245"


def test_randomised_is_deterministic_and_differs_between_seeds():
    a, b, c = (generate_scene(cfg(), s) for s in (11, 11, 12))
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)
    assert [p.cls for p in a.labels] == [p.cls for p in b.labels]


def test_randomised_labels_sit_on_painted_bodies_despite_scale_jitter():
    for seed in (3, 4):
        scene = generate_scene(cfg(randomised={"sensor": {"scale_jitter": [1.14, 1.15]}}), seed)
        h, w = scene.body_mask.shape
        m8 = np.zeros((h, w), np.uint8)
        for poly in scene.labels:
            pix = map_to_pixel(poly.corners, scene.transform)
            cv2.fillPoly(m8, [np.round((pix - 0.5) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
        mask = m8.astype(bool)
        iou = (mask & scene.body_mask).sum() / (mask | scene.body_mask).sum()
        assert iou > 0.8
        # Scale jitter: cars look smaller than their nominal metres (drawn at 1.14-1.15x m/px).
        lengths = [corners_to_obb(map_to_pixel(p.corners, scene.transform))[2] * 0.5
                   for p in scene.labels]
        assert max(lengths) < 21.0 / 1.13


def test_palettes_cover_the_hue_circle():
    rcfg = default_config().randomised
    hues = []
    for seed in range(20):
        pal = appearance.random_palettes(np.random.default_rng(seed), rcfg)["tarp_colors"]
        for rgb in pal.values():
            r, g, b = (np.asarray(rgb) / 255).tolist()
            hues.append(colorsys.rgb_to_hsv(r, g, b)[0])
    counts, _ = np.histogram(hues, bins=12, range=(0, 1))
    assert counts.min() > 0  # every 30-degree sector is used


def test_coaches_are_drawn_but_never_labelled():
    over = {"negatives": {"passenger_trains": [3, 3]}, "vehicles": {"min": 0, "max": 0}}
    scene = generate_scene(cfg(**over), 5)
    assert scene.labels == []
    assert not scene.body_mask.any()
    # The same scene without coaches differs only by the coaches drawn on the tracks.
    quiet = generate_scene(cfg(**{**over, "negatives": {"passenger_trains": [0, 0]}}), 5)
    assert digest(scene) != digest(quiet)


def test_place_coaches_respects_occupied_track():
    from detector.synth.layout import plan_yard
    from detector.synth.scene import resolve_config

    c = resolve_config(cfg())
    yard = plan_yard(c.yard, np.random.default_rng(0), (500.0, 500.0))
    coaches = place_coaches(c.negatives, np.random.default_rng(1), yard)
    assert coaches and all(v.cls == COACH for v in coaches)
    assert all(20 <= v.length <= 26 for v in coaches)
    again = place_coaches(c.negatives, np.random.default_rng(1), yard)
    starts = {round(v.cx, 3) for v in coaches}
    assert not starts & {round(v.cx, 3) for v in again}  # second call avoids the first's track


def test_site_seed_keeps_the_place_and_changes_the_day():
    a = generate_scene(cfg(), 1, site_seed=99)
    b = generate_scene(cfg(), 2, site_seed=99)
    assert a.transform == b.transform  # same georeferencing
    assert digest(a) != digest(b)
    other = generate_scene(cfg(), 1, site_seed=100)
    assert other.transform != a.transform


def test_unknown_appearance_is_one_clear_error():
    with pytest.raises(DetectorError, match="appearance"):
        generate_scene(cfg(appearance="cartoon"), 0)


def test_joint_stretch_keeps_hues_where_per_band_stretch_shifts_them(tmp_path):
    """A grey patch on a green scene stays grey under the joint stretch, not per band."""
    from affine import Affine
    from rasterio.crs import CRS

    from detector.raster import open_raster, to_uint8, write_geotiff

    img = np.zeros((3, 64, 64), np.uint8)
    img[:] = np.array([70, 120, 50], np.uint8)[:, None, None]  # grass
    img[:, 20:30, 20:30] = 128  # grey ballast
    img[:, 40:42, :] = np.array([200, 210, 190], np.uint8)[:, None, None]
    path = tmp_path / "g.tif"
    write_geotiff(path, img, Affine(0.5, 0, 0, 0, -0.5, 0), CRS.from_epsg(32652))
    grey = {}
    for method in ("percentile", "joint_percentile"):
        with open_raster(path) as src:
            low, high = scene_stretch(src, {"bands": [1, 2, 3], "method": method,
                                            "percentiles": [0.5, 99.5]})
        out = to_uint8(img, low, high)
        grey[method] = out[:, 25, 25].astype(int)
    assert np.ptp(grey["joint_percentile"]) <= 2
    assert np.ptp(grey["percentile"]) > 20


def test_parallel_writing_gives_the_same_files(tmp_path):
    from detector.atomic import sha256_file
    from detector.synth import write_scenes

    def run(jobs):
        c = cfg(out=str(tmp_path / f"j{jobs}"), n_scenes=2, seed=4, jobs=jobs,
                size=[256, 256])
        return [sha256_file(p) for p in write_scenes(c)]

    assert run(1) == run(2)


def test_dataset_cache_key_follows_the_composed_synth_config(monkeypatch):
    """Editing conf/synth.yaml (not only data.synth overrides) or the generator changes the key."""
    from detector.config import compose
    from detector.data import synthetic
    from detector.synth import scene
    from detector.train.train import dataset_key

    data_cfg = compose("train", []).data
    key = dataset_key(data_cfg, "obb")
    assert dataset_key(data_cfg, "obb") == key  # stable

    real = synthetic.compose_synth

    def edited(block, out_dir="."):
        c = real(block, out_dir)
        c.style.haze = [0.3, 0.4]  # as if the user edited conf/synth.yaml
        return c

    monkeypatch.setattr(synthetic, "compose_synth", edited)
    assert dataset_key(data_cfg, "obb") != key
    monkeypatch.setattr(synthetic, "compose_synth", real)
    monkeypatch.setattr(scene, "GENERATOR_VERSION", "999")
    assert dataset_key(data_cfg, "obb") != key
