"""What every command does the same way: a user error is one message and exit status 2, nothing else.

A user error is something the person at the keyboard can fix (a wrong path, a missing model file, a typo, no
network for pretrained weights): every project error (`FERLightningError`) and a missing file. Anything else is a
bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` (the switch Hydra users know) shows the traceback of user
errors too.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from omegaconf import DictConfig

from fer_lightning.errors import FERLightningError

EXIT_USER_ERROR = 2
USER_ERRORS: tuple[type[BaseException], ...] = (FERLightningError, FileNotFoundError)
VERBOSE_ENV = "HYDRA_FULL_ERROR"

Result = TypeVar("Result")


def show_tracebacks() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def print_user_error(err: BaseException) -> None:
    """``error: <message>`` on stderr; a message that lists several items (bad files) keeps its lines."""
    message = str(err).strip() or type(err).__name__
    if isinstance(err, FileNotFoundError) and err.filename and str(err.filename) not in message:
        message = f"{message}: {err.filename}"
    print(f"error: {message}", file=sys.stderr, flush=True)


def exit_on_user_error(action: Callable[[], Result]) -> Result:
    """Run ``action``; a user error ends the process with its message and exit status 2 (traceback if verbose)."""
    try:
        return action()
    except USER_ERRORS as err:
        if show_tracebacks():
            raise
        print_user_error(err)
        raise SystemExit(EXIT_USER_ERROR) from None


def in_multirun() -> bool:
    """Whether this Hydra job is one of a sweep: there a failed job must fail alone, as an exception Hydra records."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def end_job_on_user_error(err: BaseException, log: logging.Logger) -> None:
    """Inside a Hydra app: a user error of a single run ends it with one line and exit status 2.

    The line also goes to the job's log file. In a sweep, or with tracebacks asked for, the caller re-raises.
    """
    if in_multirun() or show_tracebacks():
        log.exception("Job failed")
        return
    for handler in logging.getLogger().handlers:  # Hydra's job log file; the console gets the plain line below
        if isinstance(handler, logging.FileHandler):
            handler.emit(logging.LogRecord(log.name, logging.ERROR, __file__, 0, f"error: {err}", None, None))
    print_user_error(err)
    raise SystemExit(EXIT_USER_ERROR) from None


# Lightning messages that say nothing about this run (hardware we do not use, its own defaults, tips) or that
# repeat what our own output says (the best checkpoint reloaded for the final val/test, the RNG callback).
LIGHTNING_NOISE = (
    "Seed set to", "GPU available:", "TPU available:", "HPU available:", "💡 Tip:", "Trainer already configured with",
    "was configured so 100% of the batches",
    "The following callbacks returned in `LightningModule.configure_callbacks`",
    "Loaded model weights from the checkpoint at",
)
WARNING_NOISE = (
    r".*isinstance\(treespec, LeafSpec\)",  # torch's pytree API inside Lightning: nothing a user can act on
    r".*is smaller than the logging interval",  # short epochs log per epoch anyway (epoch metrics)
    r".*does not have many workers",  # num_workers: auto chose 0 on purpose (experiments/num_workers)
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in LIGHTNING_NOISE)


def quiet_console(verbose: bool) -> None:
    """Each log line once, without the known noise (unless `verbose`).

    Lightning gives its loggers their own console handler when it is imported before Hydra configures logging, so
    under Hydra every Lightning line was printed twice ("INFO: ..." and Hydra's format); its handlers are removed
    and the records go through Hydra's handlers (console and the job's log file) only.
    """
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
        logger.propagate = True
    if not verbose:
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, _DropNoise) for f in handler.filters):
                handler.addFilter(_DropNoise())
    if not verbose:
        for pattern in WARNING_NOISE:
            warnings.filterwarnings("ignore", message=pattern)


NON_PREFLIGHT_FLAGS = ("-m", "--multirun", "-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc",
                       "--shell-completion", "-p", "--package", "-cd", "--config-dir", "-cp", "--config-path",
                       "-cn", "--config-name", "--experimental-rerun")
PREFLIGHT_SKIP_ENV = "FER_LIGHTNING_SKIP_CONFIG_CHECKS"


def preflight_then(hydra_app: Callable[[], Result], config_name: str,
                   check: Callable[[DictConfig], None]) -> Callable[[], Result]:
    """`hydra_app`, preceded by `check` on the composed config of a single run, before Hydra makes its run folder.

    A user error found there ends the command with one line and exit status 2, and nothing was created. Sweeps,
    help and config printing run unchecked (each sweep job reports its own failure); so does a command whose config
    cannot be composed here (Hydra then says why).
    """

    def checked_app() -> Result:
        argv = sys.argv[1:]
        flags = {arg.split("=", 1)[0] for arg in argv if arg.startswith("-")}
        if not flags & set(NON_PREFLIGHT_FLAGS) and os.environ.get(PREFLIGHT_SKIP_ENV, "") in ("", "0"):
            cfg = _compose_quietly(config_name, [arg for arg in argv if not arg.startswith("-")])
            if cfg is not None:
                exit_on_user_error(lambda: check(cfg))
        return hydra_app()

    return checked_app


def _compose_quietly(config_name: str, overrides: list[str]) -> DictConfig | None:
    """The run's config as the Hydra app will see it (`hydra:` interpolations resolved), or None if it fails."""
    import tempfile

    from fer_lightning.config import compose_config

    try:
        return compose_config(config_name, overrides, tempfile.gettempdir())
    except Exception:  # noqa: BLE001 - Hydra reports an uncomposable command line itself, with its own message
        return None


def run_job(job: Callable[[DictConfig], Result], cfg: DictConfig, log: logging.Logger) -> Result:
    """The body of a Hydra app: a quiet console, then `job(cfg)`; how it fails depends on who can fix it.

    A user error of a single run ends it with one line and exit status 2; anything else (and every failure of a
    sweep job) also goes into the job's own log, since Hydra prints it only to stderr.
    """
    quiet_console(bool(cfg.get("verbose", False)))
    try:
        return job(cfg)
    except USER_ERRORS as err:
        end_job_on_user_error(err, log)
        raise
    except Exception:
        log.exception("Job failed")
        raise


# --- key=value commands (fer-predict, the browser app) -------------------------------------------------------------

Settings = TypeVar("Settings")


def key_value_usage(doc: str, settings_type: type) -> str:
    """`--help` of a key=value command: its docstring's first paragraph, then every key with its default."""
    import dataclasses

    keys = "\n".join(f"  {f.name}={f.default!r}" for f in dataclasses.fields(settings_type))
    return f"{doc.split(chr(10) * 2)[0]}\n\nKeys (key=value):\n{keys}"


def wants_help(argv: list[str]) -> bool:
    return any(arg in ("-h", "--help") for arg in argv)


def parse_key_values(settings_type: type[Settings], argv: list[str]) -> Settings:
    """key=value arguments onto a settings dataclass's typed defaults; an unknown key or a wrong type is an error
    naming it.

    An unknown key names the closest field, as the training command and `fer-export` do: OmegaConf's own
    message ("Key 'ckpt' not in 'PredictConfig'") says what is wrong, not what was meant. A leading `+`/`++`
    (the training command's way to add a key) is accepted, as `fer-export` accepts it.
    """
    import dataclasses
    import difflib

    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from fer_lightning.errors import UsageError

    bad = [arg for arg in argv if "=" not in arg]
    if bad:
        raise ValueError(f"arguments must be key=value, got {bad}; see --help")
    argv = [arg.lstrip("+") for arg in argv]
    known = [f.name for f in dataclasses.fields(settings_type)]  # type: ignore[arg-type]
    for arg in argv:
        key = arg.split("=", 1)[0]
        if key.split(".")[0] not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise UsageError(f"unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else "")
                             + "; see --help")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(settings_type), OmegaConf.from_dotlist(argv))
    except OmegaConfBaseException as err:
        raise ValueError(f"{err.msg if hasattr(err, 'msg') else err}; see --help") from err
    return settings_type(**OmegaConf.to_container(merged))  # type: ignore[arg-type]
