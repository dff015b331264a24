import numpy as np
import pytest
from patch_factories import learnable_pairs, write_published, write_split

from geomatch.errors import InputError
from geomatch.training.datasets import VIS_NIR_TESTS, carve_validation, load_dataset


def test_vis_nir_loads_train_present_tests_and_seed_val(tmp_path):
    root = write_published(tmp_path / "vn", "vis-nir", n_train=40, n_test=16, tests=("field", "water"), val_data=16)
    ds = load_dataset("vis-nir", root)
    assert ds.name == "vis-nir"
    assert len(ds.train) == 40 and isinstance(ds.train.images, np.memmap)
    assert list(ds.tests) == ["field", "water"]
    assert ds.missing_tests == [n for n in VIS_NIR_TESTS if n not in ("field", "water")]
    assert ds.seed_val is not None and ds.seed_val.blocks == 8 and ds.clean_val is None
    batch = ds.train.batch(np.array([3, 0]))
    assert batch.shape == (2, 2, 32, 32) and batch.dtype == np.uint8
    assert np.array_equal(batch[1], np.load(root / "country.npy")[0])


@pytest.mark.parametrize(("layout", "test_name"), [("os", "os_test"), ("sen1-2", "sne_test")])
def test_os_and_sen12_file_names(tmp_path, layout, test_name):
    root = write_published(tmp_path / layout, layout, n_train=24, n_test=12)
    ds = load_dataset(layout, root)
    assert list(ds.tests) == [test_name]
    assert ds.train.counts()["pairs"] == 24 and ds.tests[test_name].counts()["pairs"] == 12
    # A folder given as --dataset is recognised by its files.
    assert load_dataset(str(root)).name == layout


def test_built_folder_layout(tmp_path):
    root = write_published(tmp_path / "built", "dir", n_train=24, n_test=12, tests=("a", "b"))
    ds = load_dataset(str(root))
    assert ds.name == "dir" and list(ds.tests) == ["a", "b"] and len(ds.clean_val) == 12


def test_missing_labels_file_is_named(tmp_path):
    root = tmp_path / "os"
    images, _ = learnable_pairs(8, 16)
    root.mkdir()
    np.save(root / "os_train_image.npy", images)
    with pytest.raises(InputError, match="os_train_label.npy"):
        load_dataset("os", root)


def test_missing_folder_and_bad_shapes(tmp_path):
    with pytest.raises(InputError, match="--data-dir"):
        load_dataset("sen1-2", tmp_path / "nope")
    root = tmp_path / "bad"
    write_split(root, "train.npy", "train_label.npy", np.zeros((4, 3, 8, 8), np.uint8), np.zeros(4, np.int64))
    with pytest.raises(InputError, match=r"\(N, 2, P, P\)"):
        load_dataset(str(root))
    write_split(root, "train.npy", "train_label.npy", np.zeros((4, 2, 8, 8), np.uint8), np.array([0, 1, 2, 0]))
    with pytest.raises(InputError, match="labels must be 0"):
        load_dataset(str(root))


def test_carved_validation_is_disjoint_and_seeded(tmp_path):
    root = write_published(tmp_path / "os", "os", n_train=50, n_test=10)
    train = load_dataset("os", root).train
    tr, va = carve_validation(train, 0.2, seed=3)
    assert len(tr) == 40 and len(va) == 10
    assert not set(tr.rows) & set(va.rows)
    tr2, va2 = carve_validation(train, 0.2, seed=3)
    assert np.array_equal(va.rows, va2.rows)
    # Views read the right rows and labels.
    full = np.load(root / "os_train_image.npy")
    assert np.array_equal(va.batch(np.array([1])), full[va.rows[[1]]])
    assert np.array_equal(va.labels, train.labels[va.rows])
