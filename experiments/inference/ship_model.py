"""Turn a finished FER2013 training run into the model shipped in ``fer_lightning/assets/``.

    python experiments/inference/ship_model.py --run outputs/train/runs/<run dir> --data ../shared/data/fer2013.zip \
        [--ckplus ../shared/data/ckplus48_dev.zip]
    python experiments/inference/ship_model.py --refresh --data ../shared/data/fer2013.zip --ckplus CKPLUS

Steps: slim the run's best checkpoint (weights, hyperparameters and preprocessing only: no optimizer state),
export it to ONNX, re-evaluate both files on PublicTest and PrivateTest through the recogniser's own
``face_crop`` path (so the card's numbers are the numbers a user gets), check they agree with the training run's
``metrics.json``, and write ``fer2013_compact_cnn.json`` and ``MODEL_CARD.md`` from what was measured.
``--ckplus`` adds the faces-from-elsewhere numbers (CK+ dev, the label map of ``conf/extra_test/ckplus.yaml``),
measured the same way. ``--refresh`` re-measures the files already shipped and re-renders the card, keeping its
recipe (the training run folder of a model shipped earlier may be long gone).
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

import fer_lightning
from fer_lightning.assets import ASSETS_DIR, SHIPPED_MODEL_STEM
from fer_lightning.config import CONF_DIR
from fer_lightning.data.datamodule import load_fer2013
from fer_lightning.data.folder_faces import LabelledFaces, instantiate_extra_tests
from fer_lightning.inference.export import export_onnx
from fer_lightning.inference.recognizer import EmotionRecognizer
from fer_lightning.labels import EMOTIONS, TEST, VAL
from fer_lightning.metrics import confusion_matrix, present_class_metrics
from fer_lightning.metrics import split_metrics as evaluation_metrics

KEEP_KEYS = ("state_dict", "hyper_parameters", "fer_lightning", "epoch", "global_step", "pytorch-lightning_version")
AGREEMENT_TOLERANCE = 1e-3  # batch composition changes float sums in the last bits; never an argmax at scale


def slim_checkpoint(source: Path, target: Path) -> None:
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    missing = [key for key in ("state_dict", "hyper_parameters", "fer_lightning") if key not in checkpoint]
    if missing:
        raise KeyError(f"{source} lacks {missing}: not a fer_lightning training checkpoint")
    torch.save({key: checkpoint[key] for key in KEEP_KEYS if key in checkpoint}, target)


def split_metrics(recognizer: EmotionRecognizer, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The card's numbers for one split, with the metric definitions training uses (fer_lightning.metrics)."""
    probs = np.concatenate([recognizer.predict_faces(list(images[i:i + 512])) for i in range(0, len(images), 512)])
    metrics = evaluation_metrics(probs, labels, EMOTIONS, "split")
    exact = float((probs.argmax(axis=1) == labels).mean())  # torchmetrics gives float32; the card keeps the count
    assert abs(exact - metrics["split/acc"]) < 1e-6, (exact, metrics["split/acc"])
    return {"acc": exact, "f1_macro": metrics["split/f1_macro"],
            "acc_per_class": {name: metrics[f"split/acc_{name}"] for name in EMOTIONS}, "n": int(len(labels)),
            "confusions": top_confusions(probs, labels)}


def top_confusions(probs: np.ndarray, labels: np.ndarray, count: int = 3) -> list[dict[str, Any]]:
    """The card's "most common mistakes": the largest shares of a class read as another, measured, not recalled."""
    counts = confusion_matrix(probs, labels, len(EMOTIONS)).astype(float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    np.fill_diagonal(shares, -1.0)  # a class read as itself is no mistake
    order = np.argsort(-shares, axis=None, kind="stable")[:count]
    return [{"class": EMOTIONS[true], "read_as": EMOTIONS[other], "share": float(shares[true, other])}
            for true, other in zip(*np.unravel_index(order, shares.shape))]


def read_ckplus(root: str) -> LabelledFaces:
    """CK+ dev as `extra_test=ckplus` reads it (its label map: anger->angry, sadness->sad, contempt dropped)."""
    from omegaconf import OmegaConf

    node = OmegaConf.load(CONF_DIR / "extra_test" / "ckplus.yaml")
    node.ckplus.root = root
    (test_set,) = instantiate_extra_tests(node)
    return test_set.load()


def ckplus_metrics(recognizer: EmotionRecognizer, faces: LabelledFaces) -> dict[str, Any]:
    """Accuracy over all 7 outputs (a face read as neutral is wrong); per class and macro-F1 over its 6 classes."""
    probs = recognizer.predict_faces(list(faces.images))
    metrics = present_class_metrics(probs, faces.labels, EMOTIONS, "ck")
    return {"acc": metrics["ck/acc"], "f1_macro": metrics["ck/f1_macro"],
            "acc_per_class": {name: metrics[f"ck/acc_{name}"] for name in faces.classes}, "n": int(len(faces.labels)),
            "source": Path(faces.source).name, "dropped": faces.dropped}


def measure(data: str, ckplus: str | None) -> dict[str, Any]:
    """Both shipped files, through the recogniser users run, on PublicTest, PrivateTest and (optionally) CK+ dev."""
    arrays = load_fer2013(data)
    ck_faces = read_ckplus(ckplus) if ckplus else None
    evaluation: dict[str, Any] = {}
    for kind in ("ckpt", "onnx"):
        recognizer = EmotionRecognizer.from_checkpoint(ASSETS_DIR / f"{SHIPPED_MODEL_STEM}.{kind}", detector="none")
        evaluation[kind] = {split: split_metrics(recognizer, arrays.images[arrays.splits == code],
                                                 arrays.labels[arrays.splits == code])
                            for split, code in (("PublicTest", VAL), ("PrivateTest", TEST))}
        if ck_faces is not None:
            evaluation[kind]["CK+ dev"] = ckplus_metrics(recognizer, ck_faces)
    return evaluation


def check_agreement(evaluation: dict[str, Any], reference: dict[str, float], what: str) -> None:
    """The shipped files reproduce `reference` (a training run's metrics, or the card being refreshed)."""
    for split, key in (("PublicTest", "val/acc"), ("PrivateTest", "test/acc")):
        for kind in ("ckpt", "onnx"):
            gap = abs(evaluation[kind][split]["acc"] - reference[key])
            if gap > AGREEMENT_TOLERANCE:
                raise SystemExit(f"{kind} {split} accuracy {evaluation[kind][split]['acc']:.4f} differs from "
                                 f"{what}'s {key} {reference[key]:.4f}: preprocessing drifted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="the training run folder whose best checkpoint is shipped")
    source.add_argument("--refresh", action="store_true", help="re-measure the shipped files, keep their recipe")
    parser.add_argument("--data", required=True)
    parser.add_argument("--ckplus", default=None, help="CK+ dev (folder or zip): adds its numbers to the card")
    parser.add_argument("--command", default=None, help="the training command, for the card")
    parser.add_argument("--note", default=None, help="a sentence for the card, e.g. how this run was chosen")
    parser.add_argument("--machine", default=f"{platform.processor() or platform.machine()}, CPU only")
    args = parser.parse_args()
    ckpt = ASSETS_DIR / f"{SHIPPED_MODEL_STEM}.ckpt"
    onnx = ASSETS_DIR / f"{SHIPPED_MODEL_STEM}.onnx"
    card_json = ASSETS_DIR / f"{SHIPPED_MODEL_STEM}.json"

    if args.refresh:
        card = json.loads(card_json.read_text())
        evaluation = measure(args.data, args.ckplus)
        check_agreement(evaluation, card["training_run_metrics"], "the card")
        card.update(evaluation=evaluation, evaluated_on=date.today().isoformat())
    else:
        run_metrics = json.loads((args.run / "metrics.json").read_text())
        config = yaml.safe_load((args.run / "config.yaml").read_text())
        slim_checkpoint(Path(run_metrics["best_ckpt_path"]), ckpt)
        export_onnx(ckpt, onnx)
        evaluation = measure(args.data, args.ckplus)
        check_agreement(evaluation, run_metrics, "the training run")
        card = {
            "model": SHIPPED_MODEL_STEM, "fer_lightning_version": fer_lightning.__version__,
            "date": date.today().isoformat(), "evaluated_on": date.today().isoformat(), "machine": args.machine,
            "command": args.command, "note": args.note,
            "backbone": run_metrics["backbone"], "params": run_metrics["params"],
            "input_size": run_metrics["input_size"], "epochs_trained": run_metrics["epochs"],
            "selected_epoch": int(torch.load(ckpt, weights_only=False)["epoch"]),
            "train_time_s": run_metrics["train_time_s"], "train_images_per_s": run_metrics["train/images_per_s"],
            "optimizer": config["model"]["optimizer"], "scheduler": config["model"]["scheduler"],
            "label_smoothing": config["model"]["loss"]["label_smoothing"], "batch_size": config["data"]["batch_size"],
            "net_kwargs": config["model"].get("net_kwargs") or {}, "loss": config["model"]["loss"],
            "weighted_sampling": bool(config["data"].get("weighted_sampling")),
            "seed": config["seed"], "train_transform": config["data"]["train_transform"],
            "distill": config["model"].get("distill") if (config["model"].get("distill") or {}).get("teachers")
            else None,
            "class_counts": run_metrics["class_counts"],
            "evaluation": evaluation,
            "training_run_metrics": {k: run_metrics[k]
                                     for k in ("val/acc", "test/acc", "val/f1_macro", "test/f1_macro")},
        }
    card["files"] = {kind: {"name": path.name, "bytes": path.stat().st_size} for kind, path in
                     (("ckpt", ckpt), ("onnx", onnx))}
    card_json.write_text(json.dumps(card, indent=2) + "\n")
    (ASSETS_DIR / "MODEL_CARD.md").write_text(render_card(card))
    print(json.dumps({k: card[k] for k in ("files", "training_run_metrics")}, indent=2))
    print({kind: {s: round(v["acc"], 4) for s, v in e.items()} for kind, e in evaluation.items()})


def render_elsewhere(card: dict[str, Any]) -> str:
    """The card's faces-from-elsewhere section: CK+ dev when it was measured, else a plain statement that not."""
    ck = card["evaluation"]["ckpt"].get("CK+ dev")
    if ck is None:
        return ("Not measured for this file: accuracy on faces from outside FER2013 is unknown "
                "(`ship_model.py --ckplus` measures it).")
    per_class = " | ".join(f"{name} {acc:.1%}" for name, acc in ck["acc_per_class"].items())
    weakest = min(ck["acc_per_class"], key=ck["acc_per_class"].get)
    dropped = ", ".join(f"{name} ({n})" for name, n in ck["dropped"].items()) or "none"
    onnx_ck = card["evaluation"]["onnx"]["CK+ dev"]["acc"]
    private = card["evaluation"]["ckpt"]["PrivateTest"]["acc"]
    return f"""CK+ dev (`{ck['source']}`: posed expressions from another lab, the odd-numbered subjects of CK+48;
{ck['n']} faces in FER2013's classes, left out: {dropped}). It was never trained on and chose nothing.

| set | accuracy (7-way) | macro-F1 (its 6 classes) | weakest class | faces |
| --- | --- | --- | --- | --- |
| CK+ dev | **{ck['acc']:.2%}** | {ck['f1_macro']:.3f} | {weakest} {ck['acc_per_class'][weakest]:.1%} | {ck['n']} |

Per class: {per_class}. The ONNX file gives {onnx_ck:.2%}. A face read as neutral (a class CK+ dev lacks)
counts as wrong. Against PrivateTest this is {100 * (ck['acc'] - private):+.2f} points: what a model learned on
FER2013 keeps on faces from elsewhere is measured here, not assumed."""
def render_distill(card: dict[str, Any]) -> str:
    """A recipe line for a distilled model: which teachers, at what temperature and weight (else nothing)."""
    distill = card.get("distill")
    if not distill:
        return ""
    teachers = ", ".join(f"`{teacher}`" for teacher in distill["teachers"])
    return (f"\n- Distilled from {teachers} (temperature {distill['temperature']}, weight {distill['weight']} on the "
            "teachers' softened probabilities, the rest on the labels); the teachers are not part of this file.")


def render_network(card: dict[str, Any]) -> str:
    """`compact_cnn`, plus the arguments that make this network differ from the named one's defaults."""
    kwargs = card.get("net_kwargs") or {}
    arguments = ", ".join(f"{key}={value}" for key, value in kwargs.items())
    return f"`{card['backbone']}`" + (f" with `{arguments}`" if arguments else "")


def render_balance(card: dict[str, Any]) -> str:
    """How the loss or the sampler counters FER2013's class imbalance (disgust: 1.5% of Training), if it does."""
    loss = card.get("loss") or {}
    if card.get("weighted_sampling"):
        return "; classes sampled equally often"
    if loss.get("class_weighted"):
        power = loss.get("class_weight_power", 1.0)
        weights = "inverse class frequency" if power == 1 else f"inverse class frequency to the power {power}"
        return f"; loss weighted per class by {weights}"
    return ""


def render_limits(card: dict[str, Any]) -> str:
    """Where this model is weakest on FER2013, from the card's own measurements."""
    ev = card["evaluation"]["ckpt"]
    pub, priv = ev["PublicTest"], ev["PrivateTest"]
    weakest = min(EMOTIONS, key=lambda name: pub["acc_per_class"][name])
    line = (f"- {weakest.capitalize()} is the weakest class ({pub['acc_per_class'][weakest]:.1%} PublicTest, "
            f"{priv['acc_per_class'][weakest]:.1%} PrivateTest); disgust has only "
            f"{card['class_counts']['train'][EMOTIONS.index('disgust')]} training faces.")
    if priv.get("confusions"):
        mistakes = ", ".join(f"{m['class']} read as {m['read_as']} {m['share']:.0%}" for m in priv["confusions"])
        line += f" Most common mistakes (PrivateTest): {mistakes}."
    return line


def render_card(card: dict[str, Any]) -> str:
    ev = card["evaluation"]["ckpt"]
    pub, priv = ev["PublicTest"], ev["PrivateTest"]
    per_class = "\n".join(
        f"| {name} | {card['class_counts']['train'][i] if isinstance(card['class_counts']['train'], list) else ''} "
        f"| {pub['acc_per_class'][name]:.1%} | {priv['acc_per_class'][name]:.1%} |"
        for i, name in enumerate(EMOTIONS))
    opt, sched = card["optimizer"], card["scheduler"]
    aug = ", ".join(t["_target_"].split(".")[-1] for t in card["train_transform"]["transforms"])
    onnx_gap = max(abs(card["evaluation"]["onnx"][s]["acc"] - ev[s]["acc"]) for s in ("PublicTest", "PrivateTest"))
    return f"""# Model card: `{card['model']}` (the model shipped with fer_lightning)

Generated by `experiments/inference/ship_model.py` from the training run of {card['date']}; every number below
was measured on {card.get('evaluated_on', card['date'])} by that script.

## What it is
- A compact CNN trained from scratch ({render_network(card)}, {card['params']:,} parameters) on 48x48 grayscale
  faces.
- Files: `{card['files']['ckpt']['name']}` (PyTorch Lightning checkpoint, weights and preprocessing only,
  {card['files']['ckpt']['bytes'] / 1e6:.2f} MB) and `{card['files']['onnx']['name']}` (the same network for
  onnxruntime, {card['files']['onnx']['bytes'] / 1e6:.2f} MB). Both carry the class names and the exact evaluation
  preprocessing (resize to {card['input_size']} px, normalisation), so inference matches training.
- Used by default by `python -m fer_lightning.predict` and `EmotionRecognizer.from_checkpoint()` (the ONNX file).
- Classes, in this order: {', '.join(EMOTIONS)}.

## Data
FER2013 as Kaggle's image-folder archive: Training (28,709 faces) to train, PublicTest (3,589) to select the
epoch, PrivateTest (3,589) reported only, never used to choose anything.

## Recipe
- Command: `{card['command']}`
- Optimizer `{opt['_target_']}` (lr {opt.get('lr')}, weight decay {opt.get('weight_decay')}), scheduler
  `{sched['_target_']}`; batch size {card['batch_size']}; label smoothing
  {card['label_smoothing']}{render_balance(card)}; seed {card['seed']}.
- Augmentation: {aug}.{render_distill(card)}
- {card['epochs_trained']} epochs; the checkpoint with the best PublicTest accuracy was kept (epoch index
  {card['selected_epoch']}, counting from 0).
- Trained on {card['machine']}: {card['train_time_s'] / 60:.1f} min of training at
  {card['train_images_per_s']:.0f} images/s.{chr(10) + "- " + card["note"] if card.get("note") else ""}

## Results (FER2013, single model, no test-time augmentation)

| split | accuracy | macro-F1 | faces |
| --- | --- | --- | --- |
| PublicTest (selection) | {pub['acc']:.2%} | {pub['f1_macro']:.3f} | {pub['n']} |
| PrivateTest (reported) | **{priv['acc']:.2%}** | {priv['f1_macro']:.3f} | {priv['n']} |

Per class (training faces, PublicTest accuracy, PrivateTest accuracy):

| class | train faces | PublicTest | PrivateTest |
| --- | --- | --- | --- |
{per_class}

These were measured through `EmotionRecognizer(..., detector="none").predict_faces` on the decoded FER2013
faces, i.e. the inference path users run, not the training loop. They agree with the training run's own
`metrics.json` (PrivateTest {card['training_run_metrics']['test/acc']:.2%}); the ONNX file's accuracy differs from
the checkpoint's by {onnx_gap:.4%}.

## Faces from elsewhere

{render_elsewhere(card)}

## Limits
- FER2013 is web-scraped, mostly frontal, low-resolution and noisy in its labels; human accuracy on it is about
  65%. Accuracy on your faces (other ages, ethnicities, lighting, camera angles) will differ: CK+ dev above is
  one other dataset, posed and frontal, not a measure of faces in the wild.
{render_limits(card)}
- An expression classifier reads facial muscle patterns, not what a person feels. Do not use it for decisions
  about people (hiring, policing, health, education).
- On photos, faces are first found by a detector and cropped as FER2013 frames its faces (squared box, 48x48
  gray); profile faces, small faces and heavy occlusion degrade results. Speed and the crop study:
  `experiments/inference/README.md`.
"""


if __name__ == "__main__":
    main()
