"""The experiment scripts whose numbers go into the README: scoring the finder's records, prior correction, and the
data-efficiency table. Each is checked on hand-made inputs whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_experiment_script

from fer_lightning.labels import EMOTIONS
from fer_lightning.metrics import NO_PREDICTION, present_class_metrics, present_class_metrics_of_predictions

REPO = Path(__file__).resolve().parents[1]


score_predictions = load_experiment_script("experiments/cross_dataset/score_predictions.py")
prior_correction = load_experiment_script("experiments/cross_dataset/prior_correction.py")
data_efficiency = load_experiment_script("experiments/scratch_vs_transfer/data_efficiency.py")
steady_labels = load_experiment_script("experiments/inference/steady_labels.py")


def test_no_prediction_is_wrong_and_nobody_elses_false_positive() -> None:
    labels = np.array([0, 0, 3, 3])
    predicted = np.array([0, NO_PREDICTION, 3, 0])
    metrics = present_class_metrics_of_predictions(predicted, labels, EMOTIONS, "x")
    assert metrics["x/acc"] == pytest.approx(2 / 4)
    assert metrics["x/acc_angry"] == pytest.approx(1 / 2)
    # angry: tp 1, fp 1 (the happy face), fn 1 (the unanswered one) -> 2/4; happy: tp 1, fn 1 -> 2/3
    assert metrics["x/f1_macro"] == pytest.approx((2 / 4 + 2 / 3) / 2)
    probs = np.eye(7)[[0, 0, 3, 0]]
    assert present_class_metrics(probs, labels, EMOTIONS, "x")["x/acc"] == pytest.approx(3 / 4)  # the difference


def _record(path: Path, label: str | None) -> dict:
    probs = None if label is None else {name: float(name == label) for name in EMOTIONS}
    return {"source": str(path), "label": label, "probs": probs}


def test_score_predictions_groups_maps_drops_and_counts_unanswered(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    records = [
        _record(root / "anger" / "PublicTest_1.png", "angry"),
        _record(root / "anger" / "PrivateTest_2.png", "sad"),
        _record(root / "happy" / "PrivateTest_3.png", None),  # no face found
        _record(root / "happy" / "PrivateTest_4.png", "happy"),
        _record(root / "contempt" / "PublicTest_5.png", "happy"),  # dropped by the map
    ]
    jsonl = tmp_path / "predictions.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = score_predictions.score(jsonl, root, {"anger": "angry", "contempt": "null"},
                                     ["PublicTest_", "PrivateTest_"])
    assert result["dropped"] == {"contempt": 1}
    public, private = result["groups"]["PublicTest"], result["groups"]["PrivateTest"]
    assert (public["faces"], public["no_prediction"], public["PublicTest/acc"]) == (1, 0, 1.0)
    assert (private["faces"], private["no_prediction"]) == (3, 1)
    assert private["PrivateTest/acc"] == pytest.approx(1 / 3)
    assert private["PrivateTest/acc_happy"] == pytest.approx(1 / 2)


def test_score_predictions_names_an_unknown_folder(tmp_path: Path) -> None:
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps(_record(tmp_path / "smirk" / "a.png", "happy")) + "\n")
    with pytest.raises(SystemExit, match="smirk"):
        score_predictions.score(jsonl, tmp_path, {}, [])


def test_prior_correction_tau0_is_the_model_and_tau1_favours_the_rare_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for stem in ("val", "test", "test_ckplus"):
        labels = np.concatenate([np.arange(7), rng.integers(0, 7, 50)])
        probs = rng.dirichlet(np.ones(7), size=len(labels))
        np.save(tmp_path / f"probs_{stem}.npy", probs)
        np.save(tmp_path / f"labels_{stem}.npy", labels)
    counts = [4000, 400, 4000, 7000, 4800, 3200, 5000]
    rows = prior_correction.sweep(tmp_path, counts, [0.0, 1.0])
    probs, labels = np.load(tmp_path / "probs_val.npy"), np.load(tmp_path / "labels_val.npy")
    assert rows[0]["PublicTest"] == present_class_metrics(probs, labels, EMOTIONS, "PublicTest")
    prior = np.log(np.array(counts) / sum(counts))
    adjusted = prior_correction.adjusted(probs, prior, 1.0)
    assert np.allclose(adjusted.sum(axis=1), 1.0)
    # dividing by the prior: disgust (the rarest) is predicted at least as often as before, happy at most
    before, after = probs.argmax(axis=1), adjusted.argmax(axis=1)
    assert (after == 1).sum() > (before == 1).sum()
    assert (after == 3).sum() <= (before == 3).sum()


def _metrics(experiment: str, fraction: float, faces: int, seed: int, val: float, **extra: object) -> dict:
    return {"experiment": experiment, "train_fraction": fraction, "train_images": faces, "seed": seed,
            "epochs": 15, "val/acc_best": val, "test/acc": val + 0.01, "test/ckplus/acc": val - 0.05,
            "train_time_s": 60.0, "truncated": [], **extra}


def test_data_efficiency_averages_seeds_and_refuses_a_cut_run(tmp_path: Path) -> None:
    files = []
    for seed, val in ((1, 0.40), (2, 0.44)):
        files.append(tmp_path / f"cpu_budget_f0.05_s{seed}.json")
        files[-1].write_text(json.dumps(_metrics("cpu_budget", 0.05, 1437, seed, val)))
    files.append(tmp_path / "efficientnet_lite0_f0.05.json")
    files[-1].write_text(json.dumps(_metrics("efficientnet_lite0", 0.05, 1437, 1, 0.30)))
    groups = data_efficiency.load(files)
    table = data_efficiency.markdown(groups)
    assert "| compact CNN, scratch | 1,437 (5%) | 15 | 1,2 | 42.00 ± 2.83 |" in table
    assert "| Lite0 ImageNet, full fine-tuning | 1,437 (5%) | 15 | 1 | 30.00 |" in table
    data_efficiency.figure(groups, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps(_metrics("cpu_budget", 0.1, 2871, 1, 0.5, truncated=["max_time"])))
    with pytest.raises(SystemExit, match="truncated"):
        data_efficiency.load([cut])


@pytest.mark.parametrize("script, rows", [
    ("experiments/cross_dataset/run_ablations.sh", []),
    ("experiments/scratch_vs_transfer/run_data_efficiency.sh", []),
    ("experiments/scratch_vs_transfer/run_data_efficiency.sh", ["cpu_budget:0.1:2", "scratch_cnn:1.0",
                                                               "efficientnet_lite0_staged:1.0"]),
])
def test_every_queued_row_composes(script: str, rows: list[str], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The long-run queues' rows are real overrides: a typo would otherwise surface an hour into a queue."""
    import os
    import subprocess

    from conftest import compose_train_cfg

    monkeypatch.setenv("CKPLUS_ROOT", str(tmp_path / "ck"))  # what the queue's own environment gives training
    env = dict(os.environ, DRY_RUN="1", FER2013_ROOT=str(tmp_path / "fer"))
    result = subprocess.run(["bash", str(REPO / script), *rows], capture_output=True, text=True, env=env,
                            timeout=60, check=True)
    lines = result.stdout.splitlines()
    assert len(lines) >= max(1, len(rows)), result.stdout
    composed = {}
    for line in lines:
        name, _, overrides = line.partition(": ")
        cfg = compose_train_cfg(tmp_path / name, overrides.split())
        epochs = [word.split("=")[1] for word in overrides.split() if word.startswith("trainer.max_epochs=")]
        assert epochs[0] == "15", name  # the queues' budget; a row may ask for more (the last override wins)
        assert cfg.trainer.max_epochs == int(epochs[-1]) and cfg.extra_test.ckplus.root == str(tmp_path / "ck"), name
        if "_f" in name:
            assert cfg.data.train_fraction == float(name.split("_f")[1].split("_")[0])
        if name.endswith("_s2"):
            assert cfg.seed == 2
        if name == "distill_shipped":
            # pinned to the model packaged when the row ran, not to whatever the package ships now
            assert cfg.model.distill.teachers == ["outputs/teachers/shipped_compact_cnn_40ep.ckpt"]
        composed[name] = cfg
    if "balanced_sampling" in composed:  # the sampler alone: standard augmentation, as in the `standard` row
        assert composed["balanced_sampling"].data.weighted_sampling and not composed["standard"].data.weighted_sampling
        assert composed["balanced_sampling"].data.train_transform == composed["standard"].data.train_transform


def test_a_queued_row_resumes_its_cut_run_in_its_own_folder_under_its_own_id(tmp_path: Path) -> None:
    """Without the run's own id the folder refuses the resumed run ("already belongs to run ..."): the queues
    pass FER_LIGHTNING_RUN_ID from .run_id.json, and nothing while the folder has no checkpoint yet."""
    import subprocess

    run = tmp_path / "row"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".run_id.json").write_text(json.dumps({"run_id": "2026-12-02_14-55-23_vm-15400"}))
    helper = REPO / "experiments" / "resume_in_place.sh"
    script = f'source {helper}; resume_in_place {run}; echo "${{RESUME[*]}}|${{RUN_ID[*]}}"'
    before = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    assert before == "|"  # a folder without a checkpoint starts afresh
    (run / "checkpoints" / "interrupted.ckpt").write_bytes(b"")
    after = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    assert after == f"ckpt_path={run}|FER_LIGHTNING_RUN_ID=2026-12-02_14-55-23_vm-15400"


def test_steady_labels_counts_flicker_and_the_delay_of_a_real_change(tmp_path: Path) -> None:
    """One track at 10 frames/s: happy for 2 s with a one-frame neutral blip every 0.5 s, then neutral for 2 s."""
    import json

    happy, neutral = {"happy": 0.8, "neutral": 0.2}, {"happy": 0.2, "neutral": 0.8}
    labels = ["neutral" if i % 5 == 4 else "happy" for i in range(20)] + ["neutral"] * 20
    lines = [json.dumps({"frame": i, "time_s": i / 10, "track_id": 1, "label": label,
                         "probs": happy if label == "happy" else neutral}) for i, label in enumerate(labels)]
    path = tmp_path / "predictions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    tracks, names = steady_labels.read_tracks(path)
    rows = {row["smooth_s"]: row for row in steady_labels.measure(tracks, (0.0, 0.5), hold_s=1.0)}
    raw_changes = sum(a != b for a, b in zip(labels, labels[1:]))  # 4 blips in and out, minus the one at the switch
    assert rows[0.0]["changes"] == raw_changes and rows[0.0]["label_changes_per_s"] == round(raw_changes / 3.9, 3)
    assert rows[0.5]["changes"] == 1  # the blips are gone, the real change stays
    assert rows[0.0]["sustained_changes"] == rows[0.5]["sustained_changes"] == 1
    assert rows[0.0]["shown"] == rows[0.5]["shown"] == 1
    # The majority filter (+-0.5 s) starts the neutral run at frame 18; the raw label turns at the blip of frame 19
    # (1 frame) and the smoothed one at frame 21 (3 frames), after the blip and two neutral frames.
    assert rows[0.0]["delay_frames_median"] == 1 and rows[0.5]["delay_frames_median"] == 3
