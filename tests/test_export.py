"""Exporting checkpoints (ONNX, int8 ONNX, TorchScript) and running them: same outputs, no torch needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import face_crop

import fer_lightning
from fer_lightning.cli.export import main as export_main
from fer_lightning.data.synthetic import make_synthetic_faces
from fer_lightning.inference.classifier import EmotionClassifier, TorchEmotionClassifier, load_classifier, softmax
from fer_lightning.inference.export import (
    export_onnx,
    export_torchscript,
    load_torchscript,
    parity,
    quantize_int8,
)
from fer_lightning.inference.onnx_runtime import METADATA_KEY, OnnxEmotionClassifier
from fer_lightning.preprocessing import face_to_fer, prepare_face

ROOT = Path(__file__).resolve().parents[1]
PARITY = 1e-5  # float32 PyTorch vs onnxruntime, in probability


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def onnx_model(trained_checkpoint: Path, export_dir: Path) -> Path:
    return export_onnx(trained_checkpoint, export_dir / "model.onnx")


@pytest.fixture(scope="module")
def torch_classifier(trained_checkpoint: Path) -> TorchEmotionClassifier:
    return TorchEmotionClassifier.from_checkpoint(trained_checkpoint)


def _faces(transform: object, random: int = 4) -> np.ndarray:
    """The astronaut's face plus ``random`` noise faces, prepared with ``transform``: (N, C, H, W) float32."""
    rng = np.random.default_rng(7)
    raw = [face_to_fer(face_crop())] + [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(random)]
    return np.stack([prepare_face(face, transform) for face in raw])


def _checkpoint_metadata(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["fer_lightning"]


def test_onnx_export_is_valid_self_contained_and_carries_metadata(trained_checkpoint: Path, onnx_model: Path) -> None:
    model = onnx.load(str(onnx_model))
    onnx.checker.check_model(model, full_check=True)
    assert sorted(p.name for p in onnx_model.parent.iterdir()) == ["model.onnx"]  # no external-data side file
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    assert (graph_input.name, graph_output.name) == ("input", "logits")
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 48, 48]  # symbolic batch

    meta = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    stored = _checkpoint_metadata(trained_checkpoint)
    assert meta["class_names"] == stored["class_names"] == list(fer_lightning.EMOTIONS)
    assert meta["eval_transform"] == json.loads(json.dumps(stored["eval_transform"]))
    assert (meta["input_size"], meta["in_chans"], meta["backbone"]) == (48, 1, "compact_cnn")
    assert meta["source_checkpoint"] == trained_checkpoint.name
    assert meta["fer_lightning_version"] == fer_lightning.__version__
    datetime.fromisoformat(meta["exported_at"])


def test_onnx_matches_the_checkpoint_for_any_batch_size(trained_checkpoint: Path, onnx_model: Path,
                                                        torch_classifier: TorchEmotionClassifier) -> None:
    exported = OnnxEmotionClassifier(onnx_model, intra_op_num_threads=1)
    assert isinstance(exported, EmotionClassifier)
    assert exported.class_names == torch_classifier.class_names and exported.input_size == 48
    faces = _faces(torch_classifier.eval_transform)
    # The transform rebuilt from the ONNX metadata prepares faces exactly as the checkpoint's does.
    np.testing.assert_array_equal(_faces(exported.eval_transform), faces)

    for batch in (faces[:1], faces):  # 1 and 5: the batch axis is dynamic
        expected, got = torch_classifier.predict_proba(batch), exported.predict_proba(batch)
        assert got.shape == (len(batch), 7) and got.dtype == np.float32
        assert np.abs(got - expected).max() < PARITY
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert parity(trained_checkpoint, onnx_model, faces).max_abs_diff < PARITY
    assert exported.predict_proba(faces[:0]).shape == (0, 7)
    with pytest.raises(ValueError, match=r"\(N, 1, 48, 48\)"):
        exported.predict_proba(faces[:, :, :40, :40])
    assert isinstance(load_classifier(onnx_model), OnnxEmotionClassifier)


def test_fixed_batch_export_still_takes_any_number_of_faces(trained_checkpoint: Path, export_dir: Path,
                                                           torch_classifier: TorchEmotionClassifier) -> None:
    path = export_onnx(trained_checkpoint, export_dir / "fixed" / "model.onnx", dynamic_batch=False)
    exported = OnnxEmotionClassifier(path)
    assert exported.fixed_batch == 1
    faces = _faces(exported.eval_transform, random=2)
    assert np.abs(exported.predict_proba(faces) - torch_classifier.predict_proba(faces)).max() < PARITY


def test_onnx_runtime_path_runs_without_torch(onnx_model: Path) -> None:
    script = """
import sys
sys.modules["torch"] = None  # any `import torch`, however indirect, now raises ImportError
import numpy as np
from fer_lightning.inference.classifier import load_classifier
from fer_lightning.inference.onnx_runtime import OnnxEmotionClassifier
from fer_lightning.preprocessing import face_to_fer, prepare_face

classifier = load_classifier(sys.argv[1])
assert isinstance(classifier, OnnxEmotionClassifier)
photo = np.random.default_rng(0).integers(0, 256, (120, 100, 3), dtype=np.uint8)
face = prepare_face(face_to_fer(photo, box=(20, 30, 50, 60), margin=0.1), classifier.eval_transform)
probs = classifier.predict_proba(face[None])
assert probs.shape == (1, 7) and abs(float(probs.sum()) - 1.0) < 1e-5
loaded = sorted(name for name, module in sys.modules.items()
                if module is not None and name.split(".")[0] in ("torch", "lightning", "timm", "torchvision"))
assert not loaded, loaded
print("ok", classifier.class_names[int(probs.argmax())])
"""
    result = subprocess.run([sys.executable, "-c", script, str(onnx_model)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok ")


def test_int8_model_is_smaller_and_close(onnx_model: Path, export_dir: Path) -> None:
    path = quantize_int8(onnx_model, export_dir / "model.int8.onnx")
    assert path.stat().st_size < 0.5 * onnx_model.stat().st_size
    float_model, int8_model = OnnxEmotionClassifier(onnx_model), OnnxEmotionClassifier(path)
    assert int8_model.class_names == float_model.class_names
    assert int8_model.metadata["eval_transform"] == float_model.metadata["eval_transform"]
    assert "int8" in int8_model.metadata["quantization"]
    images, _ = make_synthetic_faces(64, seed=11)
    faces = np.stack([prepare_face(image, int8_model.eval_transform) for image in images])
    expected, got = float_model.predict_proba(faces), int8_model.predict_proba(faces)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.85
    assert np.abs(got - expected).max() < 0.05


def test_torchscript_export_matches_the_checkpoint(trained_checkpoint: Path, export_dir: Path,
                                                   torch_classifier: TorchEmotionClassifier) -> None:
    path = export_torchscript(trained_checkpoint, export_dir / "model.pt")
    module, meta = load_torchscript(path)
    assert meta["class_names"] == list(torch_classifier.class_names) and meta["backbone"] == "compact_cnn"
    faces = _faces(torch_classifier.eval_transform)
    with torch.no_grad():
        probs = softmax(module(torch.from_numpy(faces)).numpy())
    assert np.abs(probs - torch_classifier.predict_proba(faces)).max() < PARITY


def test_cli_exports_quantizes_and_checks(trained_checkpoint: Path, tmp_path: Path) -> None:
    output = tmp_path / "out" / "fer.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "fer_lightning.export", f"ckpt_path={trained_checkpoint}", "format=onnx",
         f"output={output}", "quantize=int8"],
        cwd=ROOT, env={**os.environ}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    int8 = output.with_name("fer.int8.onnx")
    assert f"wrote {output}" in result.stdout and f"wrote {int8}" in result.stdout
    assert "check fer.onnx: max |p_checkpoint - p_exported|" in result.stdout
    assert OnnxEmotionClassifier(output).class_names == tuple(fer_lightning.EMOTIONS)
    assert OnnxEmotionClassifier(int8).metadata["source_onnx"] == "fer.onnx"


def test_cli_default_output_sits_next_to_the_checkpoint(trained_checkpoint: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "run" / "best.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(trained_checkpoint.read_bytes())
    assert export_main([f"ckpt_path={ckpt}", "format=torchscript", "check=false"]) == 0
    assert (tmp_path / "run" / "best.pt").is_file()
    assert f"wrote {tmp_path / 'run' / 'best.pt'}" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "status", "message"), [
    ([], 2, "ckpt_path is required"),
    (["ckpt_path=/no/such/model.ckpt"], 2, "checkpoint not found: /no/such/model.ckpt"),
    (["ckpt_path=x.ckpt", "ckpt_pth=y.ckpt"], 2, "unknown key 'ckpt_pth' (did you mean 'ckpt_path'?)"),
    (["ckpt_path=x.ckpt", "format=tflite"], 2, "format must be one of ['onnx', 'torchscript']"),
    (["ckpt_path=x.ckpt", "format=torchscript", "quantize=int8"], 2, "applies to format=onnx only"),
    (["ckpt_path=x.ckpt", "opset=eighteen"], 2, "could not be converted to Integer"),
    (["x.ckpt"], 2, "expected key=value, got 'x.ckpt'"),
])
def test_cli_rejects_bad_arguments(argv: list[str], status: int, message: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert export_main(argv) == status
    assert message in capsys.readouterr().err


def test_cli_help_lists_the_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert export_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"{key}=" in out for key in ("ckpt_path", "format", "output", "opset", "quantize", "check"))


def test_onnx_file_not_written_by_export_is_refused(tmp_path: Path) -> None:
    node = onnx.helper.make_node("Identity", ["input"], ["logits"])
    graph = onnx.helper.make_graph(
        [node], "plain",
        [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 7])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 7])],
    )
    plain = tmp_path / "plain.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), str(plain))
    with pytest.raises(ValueError, match=r"plain\.onnx has no 'fer_lightning' metadata: it was not written by "
                                         r"`python -m fer_lightning\.export`"):
        OnnxEmotionClassifier(plain)
    with pytest.raises(ValueError, match="not written by"):
        load_classifier(plain)

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="garbage.onnx could not be loaded by onnxruntime"):
        OnnxEmotionClassifier(garbage)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxEmotionClassifier(tmp_path / "missing.onnx")


def test_opset_below_18_is_refused_before_exporting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="opset 17 is not supported"):
        export_onnx(tmp_path / "unused.ckpt", tmp_path / "m.onnx", opset=17)
