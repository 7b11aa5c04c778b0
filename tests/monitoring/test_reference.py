"""Building, checking and storing the drift reference."""

import json
from pathlib import Path

import numpy as np
import pytest

from monitoring.drift import FeatureReference, Reference, build_reference
from monitoring.drift.reference import FORMAT, label_feature
from tests.monitoring.conftest import FEATURE_NAMES, DigitsData


def test_integer_features_get_exact_value_bins(
    digits_data: DigitsData, digits_reference: Reference
) -> None:
    # pixel_2 takes every value 0..16 in training: a bin [v, v + w) per value, gaps between.
    pixel = digits_reference.features[2]
    edges = np.array(pixel.edges)
    assert pixel.kind == "discrete"
    np.testing.assert_array_equal(edges[0::2], np.arange(17.0))
    assert np.all((edges[1::2] - edges[0::2] > 0) & (edges[1::2] - edges[0::2] < 1e-6))
    counts = np.array(pixel.counts)
    values = digits_data.split.x_train[:, 2]
    np.testing.assert_array_equal(counts[1::2], [(values == v).sum() for v in range(17)])
    assert counts[0::2].sum() == 0  # nothing between the integers or outside the range
    np.testing.assert_allclose(np.array(pixel.positions)[1::2], np.arange(17.0))


def test_unseen_integer_inside_the_range_gets_its_own_bin() -> None:
    x = np.array([[0.0], [0.0], [3.0], [5.0]])
    feature = build_reference(x).features[0]
    np.testing.assert_array_equal(np.array(feature.edges)[0::2], np.arange(6.0))
    assert feature.counts == (0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0)


def test_constant_feature(digits_reference: Reference) -> None:
    # pixel_0 is 0 in every training image.
    pixel = digits_reference.features[0]
    assert pixel.edges[0] == 0.0
    assert len(pixel.edges) == 2
    assert 0.0 < pixel.edges[1] < 1e-6
    assert pixel.counts == (0, 1437, 0)
    assert pixel.std == 0.0
    # The Wasserstein scale falls back to the median std of the non-constant pixels.
    stds = [f.std for f in digits_reference.features if f.std > 0]
    assert pixel.scale == pytest.approx(float(np.median(stds)))


def test_continuous_feature_gets_quantile_bins() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5000, 1))
    feature = build_reference(values, bins=50).features[0]
    assert feature.kind == "continuous"
    assert len(feature.edges) == 51  # 50 quantile cuts (level 0 = the minimum) + one above the max
    inner = np.array(feature.counts[1:-1])
    assert inner.sum() == 5000
    assert inner.max() <= 5000 / 50 + 1
    assert feature.edges[0] == values.min()
    assert feature.edges[-1] > values.max()


def test_ties_in_continuous_data_deduplicate_edges() -> None:
    rng = np.random.default_rng(1)
    values = np.where(rng.random(4000) < 0.4, 0.0, rng.exponential(size=4000))[:, None]
    feature = build_reference(values).features[0]
    edges = np.array(feature.edges)
    assert np.all(np.diff(edges) > 0)
    # The point mass at 0 sits in one bin that starts at 0.
    assert edges[0] == 0.0
    assert feature.counts[1] >= 0.4 * 4000 * 0.9


def test_labels_and_confidence(digits_reference: Reference) -> None:
    assert digits_reference.labels is not None
    assert digits_reference.labels.names == tuple(str(i) for i in range(10))
    assert sum(digits_reference.labels.counts) == 1437
    assert digits_reference.confidence is not None
    assert digits_reference.confidence.kind == "continuous"
    assert 0.9 < digits_reference.confidence.mean <= 1.0


def test_json_round_trip_is_exact(digits_reference: Reference, tmp_path: Path) -> None:
    text = digits_reference.to_json()
    assert json.loads(text)["format"] == FORMAT
    assert Reference.from_json(text) == digits_reference
    path = tmp_path / "drift_reference.json"
    digits_reference.save(path)
    assert Reference.load(path) == digits_reference
    assert Reference.load(path).feature_names == tuple(FEATURE_NAMES)


def test_json_round_trip_of_awkward_floats() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(scale=1e-7, size=(300, 2)) + np.array([1e9, -3.3])
    reference = build_reference(x, confidence=rng.random(300))
    assert Reference.from_json(reference.to_json()) == reference


def test_rejects_other_formats_and_broken_files() -> None:
    with pytest.raises(ValueError, match="not a drift reference"):
        Reference.from_json(json.dumps({"input": "pixels", "features": []}))
    with pytest.raises(ValueError, match="not JSON"):
        Reference.from_json("{")
    raw = build_reference(np.arange(10.0)[:, None]).to_dict()
    raw["features"][0]["counts"] = raw["features"][0]["counts"][:-1]
    with pytest.raises(ValueError, match="counts and positions"):
        Reference.from_dict(raw)
    del raw["features"][0]["edges"]
    with pytest.raises(ValueError, match="malformed"):
        Reference.from_dict(raw)


def test_build_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="finite"):
        build_reference(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="names"):
        build_reference(np.zeros((3, 2)), feature_names=["a"])
    with pytest.raises(ValueError, match="integer"):
        build_reference(None, labels=np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="beyond"):
        build_reference(None, labels=np.array([0, 3]), label_names=["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        build_reference(np.zeros((3, 2)), feature_names=["a", "a"])
    with pytest.raises(ValueError, match="increasing"):
        FeatureReference("f", "discrete", (1.0, 1.0), (0, 1, 0), (1.0, 1.0, 1.0), 1, 0, 1, 1, 1)


def test_labels_become_a_discrete_column() -> None:
    reference = build_reference(None, labels=np.array([0, 2, 2, 2]), label_names=["a", "b", "c"])
    assert reference.labels is not None
    assert reference.labels.counts == (1, 0, 3)
    column = label_feature(reference.labels)
    edges = np.array(column.edges)
    np.testing.assert_array_equal(edges[0::2], [0.0, 1.0, 2.0])
    assert column.counts == (0, 1, 0, 0, 0, 3, 0)  # class k is bin 2k + 1
    index = np.searchsorted(edges, [-1.0, 0.0, 1.0, 2.0, 3.0], side="right")
    assert index.tolist() == [0, 1, 3, 5, 6]
