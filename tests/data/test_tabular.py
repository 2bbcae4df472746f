"""CSV and npz vector data: label columns, class mapping, split variants, bad cells."""

from pathlib import Path

import numpy as np
import pytest
import torch

from resnets.data import load_data
from resnets.errors import DataError


def test_csv_named_label_column_and_string_classes(tmp_path: Path) -> None:
    path = tmp_path / "iris.csv"
    path.write_text("Class,sepal,petal\nvirginica,1.5,2\nsetosa,0.5,-1\nvirginica,3,4e0\n")
    bundle = load_data(path, test_fraction=0)  # keep every row in train
    assert bundle.kind == "vector" and bundle.flip is False and bundle.in_channels == 2
    assert bundle.classes == ["setosa", "virginica"]
    assert bundle.train.targets.tolist() == [1, 0, 1]
    assert torch.equal(bundle.train.inputs, torch.tensor([[1.5, 2.0], [0.5, -1.0], [3.0, 4.0]]))
    assert bundle.mean == pytest.approx((5 / 3, 5 / 3)) and bundle.std[0] == pytest.approx(np.std([1.5, 0.5, 3]))


def test_csv_label_column_by_name_anywhere_and_integer_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,Target,b\n1,2,3\n4,0,6\n")
    bundle = load_data(path)
    assert bundle.classes == ["0", "1", "2"] and bundle.train.targets.tolist() == [2, 0]
    assert bundle.train.inputs.tolist() == [[1.0, 3.0], [4.0, 6.0]]


def test_csv_text_in_a_feature_column_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("x,y,label\n1,2,a\n3,oops,b\n")
    with pytest.raises(DataError, match=r"d.csv:3: column 'y' holds 'oops', not a number"):
        load_data(path)


def test_npz_train_test_variant_and_shared_class_mapping(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    x_train, x_test = np.arange(12, dtype=np.float64).reshape(4, 3), np.ones((2, 3))
    np.savez(path, x_train=x_train, y_train=np.array(["b", "a", "b", "c"]), x_test=x_test, y_test=np.array(["c", "a"]))
    bundle = load_data(path)
    assert bundle.classes == ["a", "b", "c"] and bundle.train.targets.tolist() == [1, 0, 1, 2]
    assert bundle.test.targets.tolist() == [2, 0] and bundle.train.inputs.dtype == torch.float32
    assert torch.equal(bundle.train.inputs, torch.from_numpy(x_train).float())


def test_npz_features_labels_and_images(tmp_path: Path) -> None:
    np.savez(tmp_path / "v.npz", features=np.zeros((3, 5), np.float32), labels=np.array([0, 1, 1]))
    assert load_data(tmp_path / "v.npz").sample_shape == (5,)
    np.savez(tmp_path / "i.npz", x=np.zeros((2, 7, 7), np.uint8), y=np.array([0, 1]))
    images = load_data(tmp_path / "i.npz")
    assert images.kind == "image" and images.sample_shape == (1, 7, 7) and images.flip is True


def test_npz_without_known_arrays_lists_what_it_has(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", inputs=np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"holds arrays \['inputs'\]; expected x/y"):
        load_data(tmp_path / "d.npz")
