"""Face detection, emotion classification and their run-time paths (PyTorch or onnxruntime).

Importing this package does not import torch: an exported ``.onnx`` model runs with onnxruntime alone.
"""

from fer_lightning.inference.classifier import EmotionClassifier, TorchEmotionClassifier, load_classifier
from fer_lightning.inference.detectors import (
    Detection,
    DetectorUnavailable,
    FaceDetector,
    HaarDetector,
    WholeImageDetector,
    YuNetDetector,
    create_detector,
)
from fer_lightning.inference.recognizer import EmotionRecognizer, FaceRecord
from fer_lightning.inference.timeline import plot_timelines, timeline_table, track_summaries
from fer_lightning.inference.tracking import EmotionTracker

__all__ = [
    "Detection", "DetectorUnavailable", "EmotionClassifier", "EmotionRecognizer", "EmotionTracker", "FaceDetector",
    "FaceRecord", "HaarDetector", "TorchEmotionClassifier", "WholeImageDetector", "YuNetDetector",
    "create_detector", "load_classifier", "plot_timelines", "timeline_table", "track_summaries",
]
