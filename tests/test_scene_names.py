"""Scene output names keep the letters of every script and stay unique and file-safe."""

import pytest

from detector.errors import DetectorError
from detector.scene_files import MAX_NAME_BYTES, safe_name, unique_names
from tests.test_infer_pipeline import infer, planted_scene


@pytest.mark.parametrize("text, expected", [
    ("Станция Хасан 2023", "Станция_Хасан_2023"),
    ("東京駅", "東京駅"),
    ("स्टेशन", "स्टेशन"),  # Devanagari vowel signs are marks, kept
    ("a:b*c?d|e<f>g\"h\\i", "a_b_c_d_e_f_g_h_i"),
    ("..hidden", "hidden"),
    ("tab\there\nnewline", "tab_here_newline"),
    ("///", "_"),
])
def test_safe_name(text, expected):
    assert safe_name(text) == expected


def test_long_names_are_cut_but_stay_distinct():
    a, b = safe_name("ж" * 300 + "a"), safe_name("ж" * 300 + "b")
    assert a != b and len(a.encode()) <= MAX_NAME_BYTES and len(b.encode()) <= MAX_NAME_BYTES


def test_cyrillic_scenes_in_a_folder_get_distinct_names(tmp_path):
    paths = [tmp_path / "станция_1.tif", tmp_path / "станция_2.tif", tmp_path / "депо.tif"]
    assert unique_names(paths) == ["станция_1", "станция_2", "депо"]


def test_names_differing_only_in_case_are_refused(tmp_path):
    with pytest.raises(DetectorError, match="both would write"):
        unique_names([tmp_path / "Yard.tif", tmp_path / "yard.tif"])


def test_folder_and_single_file_of_cyrillic_scenes_write_their_own_outputs(tmp_path):
    folder = tmp_path / "сцены"
    folder.mkdir()
    for k, name in enumerate(["Хасан.tif", "Туманган.tif"]):
        planted_scene(folder / name, seed=k)
    results = infer(tmp_path, folder, quicklook=False)
    assert [r.ok for r in results] == [True, True]
    out = tmp_path / "out"
    assert {p.name for p in out.glob("*.geojson")} == {"Хасан.geojson", "Туманган.geojson"}
    [single] = infer(tmp_path, folder / "Хасан.tif", quicklook=False, out=str(tmp_path / "one"))
    assert single.outputs["geojson"].name == "Хасан.geojson"
    assert not (tmp_path / "one" / "_.geojson").exists()
