"""A third-party client of the protocol, tritonclient.grpc, works unchanged."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from model_server import digits
from tests.conftest import Serve

DRIVER = Path(__file__).with_name("tritonclient_driver.py")


def test_tritonclient_metadata_and_inference(
    repository: Path, digits_version_dir: Path, serve: Serve, tmp_path: Path
) -> None:
    server = serve(repository)
    pixels = digits.load_split().x_test[:5]
    pixels_path = tmp_path / "pixels.npy"
    np.save(pixels_path, pixels)
    module = torch.jit.load(str(digits_version_dir / "model.pt"))  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        probabilities, label = module(torch.from_numpy(pixels))

    run = subprocess.run(
        [sys.executable, str(DRIVER), server.address, str(pixels_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)

    assert seen["live"]
    assert seen["ready"]
    assert seen["model_ready"]
    assert seen["server_metadata"]["name"] == "inferwatch"
    metadata = seen["model_metadata"]
    assert metadata["platform"] == "pytorch_torchscript"
    assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": ["-1", "64"]}]
    assert [o["name"] for o in metadata["outputs"]] == ["probabilities", "label"]
    for kind, request_id in (("raw", "t-1"), ("typed", "t-2")):
        result = seen[kind]
        assert result["id"] == request_id
        assert result["model_version"] == "1"
        np.testing.assert_allclose(
            result["probabilities"], probabilities.numpy(), rtol=1e-5, atol=1e-8
        )
        assert result["label"] == label.tolist()
    assert seen["unknown_model_error"]["status"] == "StatusCode.NOT_FOUND"
    assert "no-such-model" in seen["unknown_model_error"]["message"]
