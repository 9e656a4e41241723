"""Controller bundles that are damaged or do not fit together are refused at load, in one line."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fitpilot.controller.bundle import BundleError, _content_hash, load_bundle
from tests.bundles import write_random_bundle


def read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        with np.load(io.BytesIO(archive.read("arrays.npz"))) as npz:
            return manifest, {name: npz[name] for name in npz.files}


def write(path: Path, manifest: Any = None, arrays: dict[str, np.ndarray] | None = None,
          raw_manifest: bytes | None = None, raw_arrays: bytes | None = None) -> Path:
    """A bundle zip from parts; a dict manifest gets the content hash of these parts."""
    if isinstance(manifest, dict) and arrays is not None:
        manifest = {k: v for k, v in manifest.items() if k != "hash"}
        manifest["hash"] = _content_hash(manifest, arrays)
    if raw_arrays is None:
        buffer = io.BytesIO()
        np.savez(buffer, **(arrays or {}))
        raw_arrays = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.json", raw_manifest or json.dumps(manifest))
        archive.writestr("arrays.npz", raw_arrays)
    return path


@pytest.fixture
def parts(tmp_path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return read(write_random_bundle(tmp_path / "good.zip"))


def refused(path: Path, match: str) -> str:
    with pytest.raises(BundleError, match=match) as info:
        load_bundle(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_good_bundle_loads(tmp_path: Path, parts) -> None:
    manifest, arrays = parts
    assert load_bundle(write(tmp_path / "b.zip", manifest, arrays)).content_hash == (
        manifest["hash"])


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights_are_refused(tmp_path: Path, parts, value: float) -> None:
    manifest, arrays = parts
    arrays["head_w"] = arrays["head_w"].copy()
    arrays["head_w"][0, 1] = value
    refused(write(tmp_path / "b.zip", manifest, arrays), "head_w holds NaN or inf")


@pytest.mark.parametrize("outputs", [3, 6])
def test_a_head_that_does_not_fit_the_action_scheme_is_refused(
    tmp_path: Path, parts, outputs: int
) -> None:
    manifest, arrays = parts
    arrays["head_w"] = np.zeros((arrays["head_w"].shape[0], outputs), "f")
    arrays["head_b"] = np.zeros(outputs, "f")
    refused(write(tmp_path / "b.zip", manifest, arrays),
            rf"policy head gives {outputs} logits but its discrete action scheme "
            rf"\(lower, keep, raise, stop\) needs 4")


def test_a_continuous_head_on_a_discrete_scheme_is_refused(tmp_path: Path, parts) -> None:
    manifest, arrays = parts
    manifest["policy"]["head"] = "gaussian_mean"
    refused(write(tmp_path / "b.zip", manifest, arrays), "gives 4 gaussian_mean but")


@pytest.mark.parametrize(("raw", "match"), [
    (b"[1, 2]", "manifest.json holds a JSON list, not an object"),
    (b'"text"', "manifest.json holds a JSON str, not an object"),
    (b"{not json", "manifest.json is not JSON"),
])
def test_a_manifest_that_is_not_a_json_object_is_refused(
    tmp_path: Path, parts, raw: bytes, match: str
) -> None:
    refused(write(tmp_path / "b.zip", arrays=parts[1], raw_manifest=raw), match)


def test_garbage_arrays_say_the_bundle_is_corrupt(tmp_path: Path, parts) -> None:
    message = refused(write(tmp_path / "b.zip", parts[0], raw_arrays=b"\x93NUMPY garbage" * 9),
                      "is corrupt: its arrays.npz is not a numpy array archive")
    assert "pickle" not in message


@pytest.mark.parametrize(("version", "match"), [
    ("1", r"featurizer version '1' is a str, not an integer"),
    (True, r"featurizer version True is a bool, not an integer"),
    (4, r"featurizer version 4 is not supported"),
])
def test_featurizer_version_of_the_wrong_type(tmp_path: Path, parts, version, match) -> None:
    manifest, arrays = parts
    manifest["featurizer"]["version"] = version
    refused(write(tmp_path / "b.zip", manifest, arrays), match)


def test_featurizer_setting_of_the_wrong_type(tmp_path: Path, parts) -> None:
    manifest, arrays = parts
    manifest["featurizer"]["window"] = "3"
    refused(write(tmp_path / "b.zip", manifest, arrays), "window=.3. must be int, not str")
