"""fer_lightning: a PyTorch Lightning research framework for facial emotion recognition on FER2013."""

from fer_lightning import config as _config  # noqa: F401  (registers the OmegaConf resolvers the configs use)
from fer_lightning.labels import EMOTIONS, NUM_CLASSES

__version__ = "0.1.0"
__all__ = ["EMOTIONS", "NUM_CLASSES", "__version__"]
