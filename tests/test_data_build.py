"""detector.data end to end on tiny generated GeoTIFFs: readers, build, Ultralytics loader."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from affine import Affine
from rasterio.crs import CRS

from detector.config import compose
from detector.data import build_dataset, load_scene_labels
from detector.data.chipping import Chip
from detector.data.readers import xview_scenes
from detector.errors import DetectorError
from detector.geometry import obb_corners, pixel_to_map, polygon_iou, visible_fraction
from detector.labels import LabelledPolygon, write_geojson
from detector.raster import write_geotiff

CLASSES = ["freight_car", "covered_car", "tank_car", "locomotive"]
UTM = "EPSG:32652"


def random_cars(rng: np.random.Generator, n: int, width: int, height: int,
                m_per_px: float) -> list[LabelledPolygon]:
    """``n`` car bodies (14 x 3 m) in pixel coordinates, kept clear of the scene edge."""
    length, body = 14 / m_per_px, 3 / m_per_px
    cars = []
    for _ in range(n):
        cx, cy = rng.uniform(length, width - length), rng.uniform(length, height - length)
        corners = obb_corners(cx, cy, length, body, rng.uniform(0, np.pi))
        cars.append(LabelledPolygon(corners, CLASSES[int(rng.integers(0, 4))]))
    return cars


def make_scene(path: Path, cars: list[LabelledPolygon], width: int = 300, height: int = 300,
               m_per_px: float = 0.5, crs: str | None = UTM, seed: int = 0,
               label_crs: str | None = None) -> Path:
    """A 16-bit RGB scene with cars painted bright, and its labels GeoJSON beside it."""
    rng = np.random.default_rng(seed)
    data = rng.integers(200, 400, (3, height, width)).astype(np.uint16)
    mask = np.zeros((height, width), np.uint8)
    for poly in cars:
        cv2.fillPoly(mask, [np.round(poly.corners - 0.5).astype(np.int32)], 1)
    data[:, mask > 0] = 3000
    transform = Affine(m_per_px, 0, 500000, 0, -m_per_px, 4700000)
    write_geotiff(path, data, transform, crs)
    if crs is None:
        labels, label_crs_obj = cars, None
    else:
        labels = [LabelledPolygon(pixel_to_map(p.corners, transform), p.cls) for p in cars]
        label_crs_obj = CRS.from_user_input(crs)
        if label_crs:  # labels exported in another CRS
            from rasterio.warp import transform as warp

            label_crs_obj = CRS.from_user_input(label_crs)
            moved = []
            for p in labels:
                xs, ys = warp(CRS.from_user_input(crs), label_crs_obj, p.corners[:, 0],
                              p.corners[:, 1])
                moved.append(LabelledPolygon(np.column_stack([xs, ys]), p.cls))
            labels = moved
    write_geojson(path.with_suffix(".geojson"), labels, label_crs_obj)
    return path


def make_scenes(root: Path, n: int, cars_per_scene: int = 12, **kwargs) -> dict[str, list]:
    """``n`` seeded scenes under ``root``; returns scene name -> its cars (pixels)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(42)
    m = kwargs.get("m_per_px", 0.5)
    size = kwargs.get("width", 300), kwargs.get("height", 300)
    truth = {}
    for i in range(n):
        cars = random_cars(rng, cars_per_scene, *size, m)
        make_scene(root / f"scene_{i:03d}.tif", cars, seed=i, **kwargs)
        truth[f"scene_{i:03d}"] = cars
    return truth


def data_cfg(source: str, *overrides: str):
    """The ``data`` group as train.yaml would compose it, with tiny chips."""
    base = ["data.chip.size=128", "data.chip.overlap=16", "data.chip.background_keep=1.0"]
    return compose("dataset", [f"data={source}", *base, *overrides]).data


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def chip_rows(root: Path, split: str) -> dict[str, np.ndarray]:
    """Label rows of every chip of a split, by chip name."""
    return {p.stem: np.loadtxt(p, ndmin=2) if p.read_text().strip() else np.zeros((0, 9))
            for p in sorted((root / "labels" / split).glob("*.txt"))}


def test_round_trip_labels_match_scene_and_pixels(tmp_path):
    # Scenes at 0.25 m resampled to 0.5 m: chip labels mapped back must match the source.
    truth = make_scenes(tmp_path / "scenes", 3, width=512, height=512, m_per_px=0.25)
    cfg = data_cfg("geojson", f"data.root={tmp_path / 'scenes'}", "data.split.by=block",
                   "data.split.block_m=64")
    data_yaml = build_dataset(cfg, tmp_path / "ds", task="obb")
    info = read_json(data_yaml.parent / "dataset.json")
    sides = {s["name"]: s["chip_side"] for s in info["scenes"]}
    assert set(sides.values()) == {256}
    checked = 0
    for split in ("train", "val", "test"):
        for name, rows in chip_rows(data_yaml.parent, split).items():
            scene, col, row = name.rsplit("_", 2)
            chip = Chip(int(col), int(row), sides[scene], 128)
            image = cv2.imread(str(data_yaml.parent / "images" / split / f"{name}.png"))
            labels = [chip.to_scene(r[1:].reshape(4, 2) * 128) for r in rows if len(r)]
            for car in truth[scene]:
                if visible_fraction(car.corners, chip.bounds) < 1:
                    continue
                ious = [polygon_iou(car.corners, lab) for lab in labels]
                best = int(np.argmax(ious))
                assert ious[best] > 0.98
                assert int(rows[best][0]) == CLASSES.index(car.cls)
                # The pixels under the label are the painted car: resampling kept alignment.
                cx, cy = chip.to_chip(car.corners).mean(axis=0)
                assert image[int(cy), int(cx)].min() > 200
                checked += 1
    assert checked >= 20


@pytest.mark.parametrize("task", ["obb", "detect"])
def test_ultralytics_loader_counts_what_dataset_json_says(tmp_path, task):
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    make_scenes(tmp_path / "scenes", 6)
    cfg = data_cfg("geojson", f"data.root={tmp_path / 'scenes'}", "data.split.by=scene",
                   "data.split.test=0.2")
    data_yaml = build_dataset(cfg, tmp_path / "ds", task=task)
    info = read_json(data_yaml.parent / "dataset.json")
    data = check_det_dataset(str(data_yaml))
    assert data["names"] == dict(enumerate(CLASSES))
    for split in ("train", "val", "test"):
        dataset = YOLODataset(img_path=data[split], data=data, task=task, imgsz=128,
                              augment=False)
        classes = np.concatenate([lab["cls"].reshape(-1) for lab in dataset.labels])
        expected = info["splits"][split]
        assert len(dataset.labels) == expected["chips"]
        assert [int((classes == i).sum()) for i in range(4)] == \
            [expected["instances"][c] for c in CLASSES]
    assert sum(info["splits"]["train"]["instances"].values()) > 0


def test_scene_split_keeps_each_scene_in_one_split(tmp_path):
    make_scenes(tmp_path / "scenes", 10, cars_per_scene=4)
    cfg = data_cfg("geojson", f"data.root={tmp_path / 'scenes'}", "data.split.by=auto")
    root = build_dataset(cfg, tmp_path / "ds").parent
    info = read_json(root / "dataset.json")
    assert info["split"]["by"] == "scene"
    seen: dict[str, set] = {}
    for split in ("train", "val", "test"):
        for png in (root / "images" / split).glob("*.png"):
            seen.setdefault(png.stem.rsplit("_", 2)[0], set()).add(split)
    assert len(seen) == 10
    assert all(len(splits) == 1 for splits in seen.values())
    assert {s["name"]: s["split"] for s in info["scenes"]} == \
        {name: splits.pop() for name, splits in seen.items()}


def test_block_split_never_puts_a_block_in_two_splits(tmp_path):
    make_scenes(tmp_path / "scenes", 1, cars_per_scene=30, width=600, height=600)
    cfg = data_cfg("geojson", f"data.root={tmp_path / 'scenes'}", "data.split.block_m=100")
    root = build_dataset(cfg, tmp_path / "ds").parent
    info = read_json(root / "dataset.json")
    assert info["split"]["by"] == "block"  # auto: one scene is too few
    blocks = info["scenes"][0]["blocks"]
    assert {b["split"] for b in blocks} == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        for png in (root / "images" / split).glob("*.png"):
            col, row = (int(v) for v in png.stem.rsplit("_", 2)[1:])
            [home] = [b for b in blocks if b["bounds"][0] <= col < b["bounds"][2]
                      and b["bounds"][1] <= row < b["bounds"][3]]
            assert home["split"] == split
            assert col + 128 <= home["bounds"][2] and row + 128 <= home["bounds"][3]


def test_xview_classes_map_as_configured(tmp_path):
    images = tmp_path / "train_images"
    images.mkdir()
    for image_id in ("10", "11"):
        write_geotiff(images / f"{image_id}.tif", np.zeros((3, 64, 64), np.uint8),
                      Affine(1e-5, 0, 127, 0, -1e-5, 42), "EPSG:4326")
    features = [{"type": "Feature", "geometry": None,
                 "properties": {"bounds_imcoords": f"{t},{t},{t + 20},{t + 5}",
                                "type_id": t, "image_id": "10.tif"}}
                for t in (11, 33, 34, 35, 36, 37, 38)]
    features.append({"type": "Feature", "geometry": None, "properties": {
        "bounds_imcoords": "1,1,9,9", "type_id": 18, "image_id": "11.tif"}})
    (tmp_path / "xView_train.geojson").write_text(json.dumps({"features": features}))

    def classes_of(*overrides):
        cfg = data_cfg("xview", f"data.root={tmp_path}", *overrides)
        scenes, problems = xview_scenes(cfg.root, cfg.labels, cfg.images, list(cfg.classes),
                                        cfg.class_map, cfg.keep_empty_scenes)
        assert problems == []
        return {s.name: sorted(p.cls for p in s.polygons) for s in scenes}

    assert classes_of() == {"10": ["freight_car", "freight_car", "locomotive", "tank_car"]}
    assert classes_of("data.class_map.33=freight_car", "data.keep_empty_scenes=true") == {
        "10": ["freight_car", "freight_car", "freight_car", "locomotive", "tank_car"],
        "11": []}
    with pytest.raises(DetectorError, match="class_map"):
        classes_of("data.class_map.34=passenger_car")


def test_labels_in_another_crs_are_reprojected(tmp_path):
    cars = [LabelledPolygon(obb_corners(100, 80, 28, 6, 0.3), "tank_car")]
    tif = make_scene(tmp_path / "a.tif", cars, label_crs="EPSG:4326")
    [label] = load_scene_labels(tif, tif.with_suffix(".geojson"), CLASSES)
    assert polygon_iou(label.corners, cars[0].corners) > 0.99
    no_crs = make_scene(tmp_path / "b.tif", cars, crs=None)
    [label] = load_scene_labels(no_crs, no_crs.with_suffix(".geojson"), CLASSES)
    assert np.allclose(label.corners, cars[0].corners, atol=1e-3)


def test_bad_scenes_are_reported_and_skipped(tmp_path, caplog):
    root = tmp_path / "scenes"
    make_scenes(root, 5, cars_per_scene=4)
    (root / "scene_000.geojson").unlink()                     # scene without labels
    labels = read_json(root / "scene_001.geojson")            # unknown class
    labels["features"][0]["properties"]["class"] = "boxcar"
    (root / "scene_001.geojson").write_text(json.dumps(labels))
    far = [LabelledPolygon(obb_corners(5000, 5000, 28, 6, 0), "freight_car")]
    make_scene(root / "scene_002.tif", far)                   # labels outside the raster
    (root / "scene_003.tif").write_bytes(b"not a tiff")       # unreadable
    cfg = data_cfg("geojson", f"data.root={root}", "data.split.val=0.5", "data.split.test=0",
                   "data.split.block_m=50")
    root_out = build_dataset(cfg, tmp_path / "ds").parent
    problems = read_json(root_out / "dataset.json")["problems"]
    assert len(problems) == 4
    for needle in ("scene_000.tif: no labels", "unknown class 'boxcar'", "lie outside",
                   "scene_003.tif: not a readable raster"):
        assert sum(needle in p for p in problems) == 1, needle
    assert [s["name"] for s in read_json(root_out / "dataset.json")["scenes"]] == ["scene_004"]


def test_zero_chips_is_an_error_and_leaves_nothing(tmp_path):
    make_scenes(tmp_path / "scenes", 2, cars_per_scene=0)
    cfg = data_cfg("geojson", f"data.root={tmp_path / 'scenes'}",
                   "data.chip.background_keep=0", "data.split.test=0")
    with pytest.raises(DetectorError, match="no chips"):
        build_dataset(cfg, tmp_path / "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenes"]


def test_refuses_to_replace_a_folder_that_is_not_a_dataset(tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("keep me")
    with pytest.raises(DetectorError, match="not a dataset"):
        build_dataset(data_cfg("geojson", f"data.root={tmp_path}"), tmp_path / "precious")


def test_yolo_source_validates_and_counts(tmp_path):
    make_scenes(tmp_path / "scenes", 6, cars_per_scene=6)
    built = build_dataset(data_cfg("geojson", f"data.root={tmp_path / 'scenes'}"),
                          tmp_path / "ds", task="detect")
    data_yaml = build_dataset(data_cfg("yolo", f"data.root={built}"), tmp_path / "again",
                              task="detect")
    again = read_json(data_yaml.parent / "dataset.json")
    assert again["splits"] == read_json(built.parent / "dataset.json")["splits"]
    assert yaml.safe_load(data_yaml.read_text())["path"] == str(built.parent)
    with pytest.raises(DetectorError, match="columns"):
        build_dataset(data_cfg("yolo", f"data.root={built}"), tmp_path / "obb", task="obb")


def test_synthetic_source_calls_the_generator(tmp_path, monkeypatch):
    import detector.synth

    calls = []

    def fake_write_scenes(cfg):
        calls.append(cfg)
        make_scenes(Path(cfg.out), int(cfg.n_scenes), cars_per_scene=5)

    monkeypatch.setattr(detector.synth, "write_scenes", fake_write_scenes, raising=False)
    cfg = data_cfg("synthetic", "data.synth.n_scenes=4", "data.synth.seed=3")
    root = build_dataset(cfg, tmp_path / "ds").parent
    assert calls[0].seed == 3 and Path(calls[0].out) != root / "scenes"  # built in scratch
    info = read_json(root / "dataset.json")
    assert [Path(s["image"]).parent for s in info["scenes"]] == [root / "scenes"] * 4
    assert all(Path(s["image"]).exists() for s in info["scenes"])


def test_cli_reports_one_line_and_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "detector.data", "data=geojson", f"data.root={tmp_path}/none",
         f"out={tmp_path}/ds"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path}/none: no such")


def test_synthetic_end_to_end_with_the_generator(tmp_path):
    cfg = data_cfg("synthetic", "data.synth.n_scenes=4", "+data.synth.size=[600, 600]",
                   "data.chip.size=256", "data.chip.background_keep=0.5")
    root = build_dataset(cfg, tmp_path / "ds").parent
    info = read_json(root / "dataset.json")
    assert len(info["scenes"]) == 4
    assert sum(info["splits"]["train"]["instances"].values()) > 0
    assert all(s["size"] == [600, 600] for s in info["scenes"])


def test_split_lists_resolve_like_ultralytics(tmp_path, monkeypatch):
    """`./x` in a split's .txt list is relative to the list; other paths to the working dir."""
    from detector.data.yolo import dataset_split_images

    (tmp_path / "lists" / "imgs").mkdir(parents=True)
    (tmp_path / "val").mkdir()
    for name in ("lists/imgs/a.png", "b.png", "val/c.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "lists" / "train.txt").write_text("./imgs/a.png\nb.png\n")
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text("path: .\ntrain: lists/train.txt\nval: val\nnames: [car]\n")
    monkeypatch.chdir(tmp_path)
    assert dataset_split_images(data_yaml, "train") == [tmp_path / "lists/imgs/a.png",
                                                        tmp_path / "b.png"]
    assert dataset_split_images(data_yaml, "val") == [tmp_path / "val/c.png"]
    assert dataset_split_images(data_yaml, "test") == []


def test_a_training_chip_and_the_inference_tile_over_its_ground_are_identical(tmp_path):
    """One reader and one resampling: chips (0.3 m scenes read at 0.5 m) equal the tiles."""
    import rasterio

    from detector.infer.reader import Stretch, read_tile
    from detector.infer.tiling import Tile
    from detector.raster import scene_stretch

    root = tmp_path / "scenes"
    make_scenes(root, 3, width=420, height=380, m_per_px=0.3)
    rng = np.random.default_rng(1)  # smaller than one chip: its chip reaches past the edge
    make_scene(root / "small.tif", random_cars(rng, 2, 170, 150, 0.3), width=170, height=150,
               m_per_px=0.3)
    data_yaml = build_dataset(data_cfg("geojson", f"data.root={root}"), tmp_path / "ds")
    info = read_json(data_yaml.parent / "dataset.json")
    sides = {s["name"]: s["chip_side"] for s in info["scenes"]}
    assert set(sides.values()) == {213}  # 128 px at 0.5 m from 0.3 m pixels: resampled
    norm = info["normalization"]
    compared, edge = 0, 0
    for png in sorted((data_yaml.parent / "images").rglob("*.png")):
        scene, col, row = png.stem.rsplit("_", 2)
        chip = cv2.imread(str(png))[..., ::-1].transpose(2, 0, 1)  # BGR HWC -> RGB CHW
        with rasterio.open(root / f"{scene}.tif") as src:
            stretch = Stretch(list(norm["bands"]), *scene_stretch(src, norm), norm["fill"])
            side = sides[scene]
            tile = read_tile(src, Tile(0, 0, int(col), int(row), side, (0, 0, 0, 0)), 128,
                             stretch)
            edge += int(col) + side > src.width
        assert np.array_equal(chip, tile), png.name
        compared += 1
    assert compared >= 5 and edge >= 1


def test_non_square_pixels_are_chipped_at_the_data_resolution_on_each_axis(tmp_path):
    # 0.5 m across, 1.0 m down: chips span 128 columns by 64 rows, and a car 14 x 3 m is
    # 28 x 6 chip px whatever its heading
    root = tmp_path / "scenes"
    root.mkdir()
    rng = np.random.default_rng(5)
    cars = random_cars(rng, 12, 300, 300, 0.5)
    square = make_scene(tmp_path / "square.tif", cars)
    import rasterio

    with rasterio.open(square) as src:
        data = src.read().astype(np.float64)
    tall = ((data[:, 0::2] + data[:, 1::2]) / 2).astype(np.uint16)
    write_geotiff(root / "tall.tif", tall, Affine(0.5, 0, 500000, 0, -1.0, 4700000), UTM)
    (root / "tall.geojson").write_text(square.with_suffix(".geojson").read_text())
    cfg = data_cfg("geojson", f"data.root={root}", "data.chip.min_visible=1.0",
                   "data.split.by=block", "data.split.block_m=50")
    data_yaml = build_dataset(cfg, tmp_path / "ds", task="obb")
    info = read_json(data_yaml.parent / "dataset.json")
    assert info["scenes"][0]["chip_side"] == [128, 64]
    sides = []
    for split in ("train", "val", "test"):
        for rows in chip_rows(data_yaml.parent, split).values():
            for row in rows:
                xy = row[1:].reshape(4, 2) * 128
                edges = np.linalg.norm(np.roll(xy, -1, axis=0) - xy, axis=1)
                sides.append(sorted(edges[:2]))
    assert len(sides) >= 12
    assert np.allclose(sides, [6, 28], atol=0.6)


def test_a_scene_smaller_than_a_chip_becomes_one_padded_chip(tmp_path):
    # 150 x 100 px at 0.5 m with 256 px chips: the window reaches past the scene; that part
    # is padding with the fill value, not nodata, so the chip is kept with every car in it.
    scenes = tmp_path / "scenes"
    make_scenes(scenes, 2, cars_per_scene=2, width=150, height=100)
    cfg = data_cfg("geojson", f"data.root={scenes}", "data.chip.size=256",
                   "data.chip.overlap=16", "data.split.test=0", "data.split.val=0.5",
                   "data.chip.background_keep=0")
    data_yaml = build_dataset(cfg, tmp_path / "ds", task="obb")
    info = read_json(data_yaml.parent / "dataset.json")
    assert [s["chips"] for s in info["scenes"]] == [1, 1]
    chips = sorted((data_yaml.parent / "images").rglob("*.png"))
    assert len(chips) == 2
    image = cv2.imread(str(chips[0]))
    fill = cfg.normalization.fill
    assert image.shape[:2] == (256, 256)
    assert (image[:, 151:] == fill).all() and (image[101:, :] == fill).all()
    assert (image[:99, :149] != fill).any()
    rows = [np.loadtxt(p, ndmin=2) for p in sorted((data_yaml.parent / "labels").rglob("*.txt"))]
    assert sorted(len(r) for r in rows) == [2, 2]  # min-visible unchanged: every car kept
    for r in rows:  # normalised to the padded chip: all inside the scene's 150 x 100 px
        assert (r[:, 1::2] * 256 <= 150.5).all() and (r[:, 2::2] * 256 <= 100.5).all()


def test_real_nodata_inside_a_small_scene_still_drops_the_chip(tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    rng = np.random.default_rng(4)
    for k in range(2):
        path = make_scene(scenes / f"small_{k}.tif", random_cars(rng, 1, 150, 100, 0.5), 150,
                          100, seed=k)
        from detector.raster import open_raster

        with open_raster(path) as src:
            data, transform, crs = src.read(), src.transform, src.crs
        data[:, :, :120] = 0  # 80% of the scene is nodata
        write_geotiff(path, data, transform, crs, nodata=0)
    cfg = data_cfg("geojson", f"data.root={scenes}", "data.chip.size=256",
                   "data.split.test=0", "data.split.val=0.5")
    with pytest.raises(DetectorError, match="no chips"):
        build_dataset(cfg, tmp_path / "ds")
