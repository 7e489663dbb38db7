"""Typo checks for the Hydra command lines (`python -m fer_lightning`, `python -m fer_lightning.evaluate`).

Hydra reports a mistyped config group option with a page-long "Could not find" list and a mistyped key with a
struct error that names neither the key meant nor what to do. These checks run before the Hydra app composes
anything (no run directory is created, no torch is imported) and answer with one line that suggests the
closest name, e.g. `Unknown config key 'trainer.max_epoch'. Did you mean 'trainer.max_epochs'?`.

They never block a command Hydra would accept: a key is only reported when composing the command's config
fails, and anything the checks cannot judge (Hydra's own flags and `hydra.*` keys, keys added on purpose with
`+key`/`++key`, interpolated nodes) is left to Hydra. `FER_LIGHTNING_SKIP_CONFIG_CHECKS=1` turns them off, in
case they ever get in the way. Configs of the user's own (`--config-dir DIR`, `hydra.searchpath=[file://DIR]`) are
searched as Hydra searches them, so an experiment that exists only there is no typo.

Two spellings Hydra refuses although their meaning is plain are passed on as Hydra wants them, rewritten in the
command line Hydra then parses (so `.hydra/overrides.yaml` and sweep job names show the working form):
`experiment=resnet` for a group missing from the defaults list (experiment, debug, sweep, launcher,
hparams_search) becomes `+experiment=resnet`, exactly what Hydra's own error asks for; and `trainer.X=...` for an
argument X of `lightning.pytorch.Trainer` that the trainer config does not list becomes `+trainer.X=...`, so every
Trainer argument is one override away without writing the config file Hydra's struct mode would otherwise want
(except callbacks and logger, which the train command fills from their own groups: those are an error naming them).
The evaluate command uses none of training's groups, and has no trainer: there both are reported, not rewritten.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import difflib
import functools
import importlib.util
import inspect
import io
import itertools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from fer_lightning.config import CONF_DIR
from fer_lightning.errors import FERLightningError

SKIP_ENV = "FER_LIGHTNING_SKIP_CONFIG_CHECKS"
APP_COMMANDS = {"train": "python -m fer_lightning", "eval": "python -m fer_lightning.evaluate"}
# Trainer arguments the train command passes from their own config groups (fer_lightning.train builds the Trainer
# with callbacks= and logger=, which replace the config's): `trainer.logger=false` would be silently ignored.
TRAINER_ARGUMENTS_FROM_GROUPS = ("callbacks", "logger")
# The apps whose `experiment=NAME` (a group outside the defaults list) means `+experiment=NAME`. Evaluation has no
# use for training's groups: a checkpoint brings its model and settings, so `model=...` there is an error instead.
APPS_ADDING_GROUPS = ("train",)
MAX_SWEEP_COMBINATIONS = 32  # each is one compose (~0.1 s); more than this and a sweep is checked in part
# Flags after which Hydra does not compose this project's config (or composes another one): nothing to check.
NON_COMPOSING_FLAGS = ("help", "hydra_help", "info", "shell_completion", "config_path", "experimental_rerun")
# The configs inside an installed wheel, not a checkout: no place to add a file of one's own (use --config-dir).
CONF_IS_PACKAGED = CONF_DIR.parent == Path(__file__).resolve().parent


class ConfigError(FERLightningError, ValueError):
    """A command line naming a config group option or key that does not exist; the message suggests a fix."""


def run_checked(hydra_app: Callable[[], Any], config_name: str, argv: Sequence[str] | None = None) -> Any:
    """Check the command line, then hand over to the `@hydra.main` app; on a typo exit 2 with one line on stderr.

    `@hydra.main` parses `sys.argv` itself, so the rewritten command line (`+experiment=...`, `+trainer.X=...`)
    goes there. An explicit `argv` is only checked: `sys.argv` is then not the command line being run.
    """
    given = sys.argv[1:] if argv is None else list(argv)
    try:
        rewritten = check_argv(config_name, given)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)  # as every command writes a user error
        sys.exit(2)
    except Exception as err:  # a flaw in the checks must never block a command Hydra would run
        print(f"Warning: skipped the config checks ({type(err).__name__}: {err}); set {SKIP_ENV}=1 to silence "
              "this, and please report it", file=sys.stderr)
        rewritten = given
    if argv is None and rewritten != given:
        sys.argv[1:] = rewritten
    return hydra_app()


def check_argv(config_name: str, argv: Sequence[str]) -> list[str]:
    """`check_overrides` on the overrides of a Hydra command line, unless its flags make Hydra compose nothing.

    Returns the command line with the overrides as Hydra should get them (flags unchanged, in place).
    """
    argv = list(argv)
    if os.environ.get(SKIP_ENV, "").strip().lower() in {"1", "true", "yes"}:
        return argv
    args = _parse_hydra_flags(argv)
    if args is None or any(getattr(args, flag, None) for flag in NON_COMPOSING_FLAGS):
        return argv
    if args.config_dir is not None and not Path(args.config_dir).is_dir():
        return argv  # Hydra's own message names the missing folder
    overrides = list(args.overrides or [])
    rewritten = check_overrides(args.config_name or config_name, overrides, config_dir=args.config_dir,
                                app=config_name)
    return _replace_overrides(argv, overrides, rewritten)


def check_overrides(config_name: str, overrides: list[str], config_dir: str | Path | None = None,
                    app: str | None = None) -> list[str]:
    """Raise `ConfigError` for the first unknown config group option or config key among Hydra `overrides`.

    Group options (`model=...`, `+experiment=...`, `model/optimizer=...`, each option of a sweep) are checked
    against the config files; keys against the config composed with the command's group choices, once per
    combination of swept groups (up to `MAX_SWEEP_COMBINATIONS`). `config_dir` is the command's `--config-dir`;
    `app` the command's own config (`train`, `eval`; default `config_name`), which decides `experiment=X` below.
    Returns the overrides as Hydra should get them, one for one: `experiment=X` as `+experiment=X`, a Lightning
    Trainer argument the config lacks as `+trainer.X=...` (see the module docstring); the rest as given.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if not overrides:
        return []
    with _hydra_as_the_apps_start_it(config_dir) as loader:
        parser = OverridesParser.create(config_loader=loader)  # with the loader: it expands glob() sweeps
        try:
            parsed = parser.parse_overrides(overrides)
        except HydraException:
            return list(overrides)  # a syntax error: Hydra's own message points at the character
        if not _add_user_searchpath(loader, config_name, parsed):
            return list(overrides)  # a hydra.searchpath folder Hydra cannot read: its own message names it
        checked = _OverrideChecker(config_name, loader, parser, app or config_name).check(parsed)
        return [override.input_line for override in checked]


def _replace_overrides(argv: list[str], overrides: list[str], rewritten: list[str]) -> list[str]:
    """`argv` with each of its `overrides` (in order, as argparse collected them) replaced by its rewritten form."""
    if rewritten == overrides:
        return argv
    result, index = [], 0
    for token in argv:
        if index < len(overrides) and token == overrides[index]:
            result.append(rewritten[index])
            index += 1
        else:
            result.append(token)
    return result if index == len(overrides) else argv


@contextlib.contextmanager
def _hydra_as_the_apps_start_it(config_dir: str | Path | None) -> Iterator[Any]:
    """Hydra's config loader with the apps' search path: this project's configs, then the user's `--config-dir`.

    Built as `hydra.main` builds it (the extra folder just before the schema entry), so group options of both are
    known. The previous GlobalHydra state is restored on exit, so the Hydra app itself starts clean.
    """
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    try:
        version.setbase("1.3")
        search_path = create_config_search_path(str(CONF_DIR))
        if config_dir is not None:
            search_path.prepend(provider="command-line", path=f"file://{os.path.abspath(config_dir)}",
                                anchor=SearchPathQuery(provider="schema"))
        Hydra.create_main_hydra2(task_name="app", config_search_path=search_path)
        yield GlobalHydra.instance().config_loader()
    finally:
        restore_gh_from_backup(backup)


def _add_user_searchpath(loader: Any, config_name: str, overrides: list[Any]) -> bool:
    """Add `hydra.searchpath` (command line, else the primary config) to the folders the checks search.

    Hydra only reads it when composing, but the group checks list options before that: without it an experiment
    kept in the user's own folder would be reported as unknown. Same order as Hydra: after every other folder,
    before the schema. False when one of the folders cannot be read.
    """
    searchpath = next((o.value() for o in overrides
                       if o.get_key_element() == "hydra.searchpath" and not o.is_sweep_override()), None)
    if searchpath is None:
        try:
            primary = loader.repository.load_config(config_name)
        except Exception:  # e.g. a malformed primary config of the user's: Hydra says what is wrong with it
            return False
        if primary is None or not OmegaConf.is_dict(primary.config):
            return True
        searchpath = OmegaConf.select(primary.config, "hydra.searchpath", default=None)
        if searchpath is None:
            return True
        searchpath = OmegaConf.to_container(searchpath) if OmegaConf.is_config(searchpath) else searchpath
    if not isinstance(searchpath, list) or not all(isinstance(path, str) for path in searchpath):
        return False  # Hydra refuses it with its own message
    if not searchpath:
        return True
    search_path = copy.deepcopy(loader.config_search_path)
    schema = search_path.get_path().pop(-1)
    for path in searchpath:
        search_path.append(provider="hydra.searchpath", path=path)
    search_path.append(schema.provider, schema.path)
    loader.repository.initialize_sources(search_path)
    return all(source.available() for source in loader.repository.get_sources())


def _parse_hydra_flags(argv: Sequence[str]) -> argparse.Namespace | None:
    """The command line as Hydra's own parser reads it; None where it would refuse it (Hydra then explains)."""
    from hydra._internal.utils import get_args_parser

    if "--version" in argv:
        return None
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return get_args_parser().parse_args(list(argv))
    except SystemExit:
        return None


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class _OverrideChecker:
    """The checks of one command line against one primary config (`train` or `eval`)."""

    def __init__(self, config_name: str, loader: Any, parser: Any, app: str | None = None) -> None:
        self.config_name = config_name
        self.app = app or config_name
        self.loader = loader
        self.parser = parser
        self.trainer_key_found: dict[int, set[bool]] = {}  # per `trainer.X` override (id): in the config, per job

    # --- Config group options --------------------------------------------------------------------------------

    def is_group(self, override: Any) -> bool:
        return bool(self.loader.repository.group_exists(override.key_or_group))

    def group_options(self, group: str) -> list[str]:
        from hydra.core.object_type import ObjectType

        return sorted(self.loader.get_group_options(group, results_filter=ObjectType.CONFIG))

    def check_group_option(self, override: Any) -> None:
        if override.is_delete() or override.value_type is None:
            return
        group = override.key_or_group
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:  # `+experiment=[a,b]` selects several configs of the group at once
            value = override.value()
            values = list(value) if isinstance(value, list) else [value]
        options = self.group_options(group)
        for value in values:
            if value is None or str(value) in options:
                continue
            raise ConfigError(self.unknown_option_message(group, str(value), options))

    def unknown_option_message(self, group: str, value: str, options: list[str]) -> str:
        close = difflib.get_close_matches(value, options, n=1, cutoff=0.5)
        message = f"Unknown {group} '{value}'."
        if close:
            message += f" Did you mean '{close[0]}'?"
        message += f" Available: {', '.join(options)}."
        folder = CONF_DIR / group
        if CONF_IS_PACKAGED:  # the configs inside site-packages are not the place for one's own
            message += (f" Could not find '{group}/{value}': use one of these, or add your own {group}/{value}.yaml "
                        "in a folder of yours and pass --config-dir FOLDER.")
        elif folder.is_dir():
            where = _display_path(folder)
            message += f" Could not find '{group}/{value}' in {where}/: use one of these"
            message += f", or add {where}/{value}.yaml." if value else "."
        else:
            message += f" Could not find '{group}/{value}': use one of these."
        return message

    # --- Config keys -----------------------------------------------------------------------------------------

    def check(self, overrides: list[Any]) -> list[Any]:
        """Group options first (they decide which keys exist), then keys against each combination of groups.

        Returns the overrides as Hydra should get them: groups missing from the defaults list added with `+`,
        Trainer arguments the trainer config lacks added with `+` (`++` where only some combinations lack them).
        """
        for override in overrides:
            if self.is_group(override):
                self.check_group_option(override)
        overrides = self.add_groups_missing_from_defaults(overrides)
        keys = [o for o in overrides if not self.is_group(o) and not _is_hydra_key(o.key_or_group)]
        for override in keys:
            if override.is_add() or override.is_force_add():
                self.check_added_key_is_no_group(override)
        changed = [o for o in keys if not (o.is_add() or o.is_force_add() or o.is_delete())]
        if not changed:
            return overrides
        self.trainer_key_found = {}
        # One compose without the swept groups: the whole check for a single run, and where a sweep's
        # `hydra.sweeper.params` (e.g. from `+sweep=...`) are read.
        first = self.try_compose(self.command_line(overrides, {}, changed=True), with_hydra=True)
        params_source = first or self.try_compose(self.command_line(overrides, {}, changed=False), with_hydra=True)
        combinations = self.group_combinations(overrides, params_source)
        if combinations == [{}]:
            self.check_keys(overrides, {}, changed, first)
        else:
            for combination in combinations:
                self.check_keys(overrides, combination, changed, None)
        return self.pass_trainer_arguments_through(overrides)

    # --- Spellings Hydra refuses, passed on as it wants them --------------------------------------------------

    def add_groups_missing_from_defaults(self, overrides: list[Any]) -> list[Any]:
        """`experiment=resnet` as `+experiment=resnet` when no config of the defaults tree chooses an experiment.

        Hydra refuses the former ("No match in the defaults list") and names the latter as the fix; the defaults
        tree is Hydra's own (its defaults list with the command's other group choices), so a group that a config
        of the user's does list (`- experiment: null`) is left as it is.
        """
        plain = [o for o in overrides if self.is_group(o) and not _is_hydra_key(o.key_or_group)
                 and not (o.is_add() or o.is_force_add() or o.is_delete()) and not isinstance(o.value(), dict)]
        if not plain:
            return overrides
        known = self.groups_in_defaults(overrides, include=plain)
        if known is None or not all(o.key_or_group in known for o in plain):
            # Grow the tree from the choices Hydra accepts: each may bring groups the next ones belong to.
            accepted: list[Any] = []
            while True:
                known = self.groups_in_defaults(overrides, include=accepted)
                if known is None:
                    return overrides  # the groups do not compose for another reason: Hydra's message says which
                more = [o for o in plain if o.key_or_group in known and o not in accepted]
                if not more:
                    break
                accepted += more
        missing = [o for o in plain if o.key_or_group not in known]
        if not missing:
            return overrides
        if self.app not in APPS_ADDING_GROUPS:
            group = missing[0].key_or_group
            chosen = ", ".join(sorted(g for g in known if "/" not in g and not _is_hydra_key(g)))
            command = APP_COMMANDS.get(self.app, "this command")
            raise ConfigError(f"{command} does not use a config group '{group}' (its config chooses: {chosen}). "
                              f"To add one anyway, write +{missing[0].input_line}.")
        return self.parser.parse_overrides([f"+{o.input_line}" if o in missing else o.input_line for o in overrides])

    def groups_in_defaults(self, overrides: list[Any], include: list[Any]) -> set[str] | None:
        """The groups of Hydra's defaults tree for the group overrides that are no plain choice, plus `include`.

        Swept choices are left out, as Hydra leaves them out until each job composes. None where Hydra refuses.
        """
        from hydra.types import RunMode

        lines = [o.input_line for o in overrides if self.is_group(o) and not o.is_sweep_override()
                 and (o.is_add() or o.is_force_add() or o.is_delete() or _is_hydra_key(o.key_or_group)
                      or isinstance(o.value(), dict) or o in include)]
        try:
            defaults = self.loader.compute_defaults_list(self.config_name, lines, RunMode.RUN)
        except Exception:  # Hydra's ConfigCompositionException, or a config it cannot read: it says why later
            return None
        return set(defaults.overrides.known_choices_per_group)

    def trainer_node(self, cfg: DictConfig) -> DictConfig | None:
        """The config's Lightning Trainer arguments; None where there are none (the evaluate config)."""
        if "trainer" not in cfg.keys():
            return None
        node = cfg._get_node("trainer")
        if not isinstance(node, DictConfig) or node._is_none() or node._is_missing() or node._is_interpolation():
            return None
        return node

    def note_trainer_keys(self, cfg: DictConfig, changed: list[Any]) -> None:
        """Whether each `trainer.X=...` names a key of this combination's trainer config."""
        node = self.trainer_node(cfg)
        if node is None:
            return
        for override in changed:
            name = _trainer_argument_name(override)
            if name is not None:
                self.trainer_key_found.setdefault(id(override), set()).add(name in node.keys())

    def passes_through(self, cfg: DictConfig, override: Any) -> bool:
        """`trainer.gradient_clip_val=1.0`: not in the trainer config, but an argument of Lightning's Trainer."""
        name = _trainer_argument_name(override)
        node = self.trainer_node(cfg) if name is not None else None
        if node is None or name in node.keys():
            return False
        if name in TRAINER_ARGUMENTS_FROM_GROUPS and self.loader.repository.group_exists(name):
            raise ConfigError(f"'{override.key_or_group}' cannot be set: the Trainer gets its {name} from the {name} "
                              f"config group ({name}={'|'.join(self.group_options(name))}, or {name}.KEY=...).")
        return name in _trainer_parameters()

    def pass_trainer_arguments_through(self, overrides: list[Any]) -> list[Any]:
        """`trainer.X=...` as `+trainer.X=...` where the trainer config lacks X (checked: X is a Trainer argument).

        `++` where some swept combinations have X and others not: `+` would fail in the former, a plain override
        in the latter. Reached only when no key was reported, so every X missing somewhere passed the check.
        """
        lines = []
        for override in overrides:
            found = self.trainer_key_found.get(id(override), {True})
            prefix = "" if found == {True} else "+" if found == {False} else "++"
            lines.append(prefix + override.input_line)
        if lines == [o.input_line for o in overrides]:
            return overrides
        return self.parser.parse_overrides(lines)

    def command_line(self, overrides: list[Any], combination: dict[str, str], changed: bool) -> list[str]:
        """The overrides one job composes: swept groups set to `combination`, swept keys and `hydra.*` left out
        (Hydra checks its own), and the key changes only when `changed`."""
        lines, placed = [], set()
        for override in overrides:
            key = override.get_key_element()
            if key in combination:
                lines.append(combination[key])
                placed.add(key)
            elif override.is_sweep_override() or _is_hydra_key(override.key_or_group):
                continue
            elif changed or self.is_group(override) or override.is_add() or override.is_force_add():
                lines.append(override.input_line)
        # Groups swept by the config's sweeper params come after the command line, as Hydra's BasicSweeper does.
        return lines + [line for key, line in combination.items() if key not in placed]

    def check_added_key_is_no_group(self, override: Any) -> None:
        """`+experiement=resnet` would silently add a key and train the default model: almost surely a typo."""
        key = override.key_or_group
        if "." in key or override.is_sweep_override():
            return
        value = str(override.value())
        for group in difflib.get_close_matches(key, self.top_level_groups(), n=3, cutoff=0.8):
            if value in self.group_options(group):
                prefix = "++" if override.is_force_add() else "+"
                raise ConfigError(f"Unknown config group '{key}' in '{override.input_line}'. Did you mean "
                                  f"'{prefix}{group}={value}'? ({prefix}{key}=... adds a new key '{key}' and "
                                  f"leaves {group} as it is.)")

    def top_level_groups(self) -> list[str]:
        return [name for name in self.loader.list_groups("") if name != "hydra"]

    def group_combinations(self, overrides: list[Any], composed: DictConfig | None) -> list[dict[str, str]]:
        """Each set of group choices a (multi)run composes: `+experiment=a,b` and the config's sweeper params.

        Like Hydra's BasicSweeper, sweeper params come first and the command line replaces those of the same key.
        """
        swept: dict[str, list[str]] = {}
        for override in self.sweeper_params(composed) + overrides:
            key = override.get_key_element()
            if self.is_group(override) and override.is_sweep_override():
                swept[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            else:
                swept.pop(key, None)
        return [dict(zip(swept, choice)) for choice in
                itertools.islice(itertools.product(*swept.values()), MAX_SWEEP_COMBINATIONS)]

    def sweeper_params(self, composed: DictConfig | None) -> list[Any]:
        """`hydra.sweeper.params` of a config composed with the Hydra node (e.g. `+sweep=...` sweeping experiments)."""
        if composed is None:
            return []
        sweeper = composed.hydra.sweeper
        params = sweeper.get("params") if "params" in sweeper else None
        if not isinstance(params, DictConfig):
            return []
        try:
            return self.parser.parse_overrides([f"{key}={value}" for key, value in params.items()])
        except Exception:  # e.g. Optuna's search-space syntax: keys only, nothing for the group check
            return []

    def try_compose(self, overrides: list[str], with_hydra: bool = False) -> DictConfig | None:
        """The composed config, or None where Hydra refuses the overrides (the caller finds out why)."""
        from hydra import compose
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        try:
            return compose(self.config_name, overrides=overrides, return_hydra_config=with_hydra)
        except (HydraException, OmegaConfBaseException):
            return None

    def check_keys(self, overrides: list[Any], combination: dict[str, str], changed: list[Any],
                   composed: DictConfig | None) -> None:
        """Compose as Hydra would; only if that fails, find the key that does not exist and suggest one.

        `composed`: this combination's config, when already composed with its key changes.
        """
        full = composed or self.try_compose(self.command_line(overrides, combination, changed=True))
        # Swept keys are never composed here (a value per job): they only need to exist.
        to_walk = changed if full is None else [o for o in changed if o.is_sweep_override()]
        cfg = full or self.try_compose(self.command_line(overrides, combination, changed=False))
        if cfg is None:
            return  # the groups themselves do not compose: Hydra's own message says why
        self.note_trainer_keys(cfg, changed)
        for override in to_walk:
            if self.passes_through(cfg, override):
                continue
            for key in _keys_set_by(override):
                problem = self.key_problem(cfg, key, override, combination)
                if problem:
                    raise ConfigError(problem)

    def key_problem(self, cfg: DictConfig, key: str, override: Any, combination: dict[str, str]) -> str | None:
        """Why `key` (of `override`) cannot be set in `cfg`, with the closest key; None when it can (or cannot tell)."""
        segments = key.split(".")
        node: Any = cfg
        for depth, segment in enumerate(segments):
            parent = ".".join(segments[:depth])
            if isinstance(node, DictConfig):
                if node._is_interpolation() or node._is_missing():
                    return None
                if node._is_none():
                    return f"Unknown config key '{key}': '{parent}' is null here, so it has no keys to set."
                if segment not in node.keys():  # not `in node`: that resolves interpolations, and struct mode raises
                    return self.unknown_key_message(cfg, key, override, node, depth, combination)
                node = node._get_node(segment)
            elif isinstance(node, ListConfig):
                if node._is_interpolation() or node._is_missing() or node._is_none():
                    return None
                if not segment.isdigit() or int(segment) >= len(node):
                    return f"Unknown config key '{key}': '{parent}' is a list of {len(node)} items."
                node = node._get_node(int(segment))
            else:
                if node._is_interpolation():
                    return None
                value = node._value()
                return (f"Unknown config key '{key}': '{parent}' is "
                        f"{'null' if value is None else f'a value ({value})'} here, so it has no keys to set.")
        return None

    def unknown_key_message(self, cfg: DictConfig, key: str, override: Any, parent: DictConfig, depth: int,
                            combination: dict[str, str]) -> str:
        value = override.input_line.split("=", 1)[1] if key == override.key_or_group else "..."
        # `trainer.gradient_clip_vall`: the meant name may be a Trainer argument the config does not list.
        trainer_arguments = (_trainer_parameters() if depth == 1 and key.startswith("trainer.")
                             and self.trainer_node(cfg) is not None else frozenset())
        suggestion = self.suggest_group(key, value) or _suggest_key(cfg, key, parent, depth, trainer_arguments)
        message = f"Unknown config key '{key}'."
        if combination:
            message = f"Unknown config key '{key}' (with {' '.join(combination.values())})."
        if suggestion:
            message += f" Did you mean '{suggestion}'?"
        elif trainer_arguments:
            message += " trainer.* takes the keys of conf/trainer/ and every argument of lightning.pytorch.Trainer."
        elif depth and len(parent) <= 12:
            message += f" '{'.'.join(key.split('.')[:depth])}' has: {', '.join(str(k) for k in parent.keys())}."
        else:
            command = APP_COMMANDS.get(self.config_name, "the command")
            message += f" No similar key in conf/{self.config_name}.yaml (list them with `{command} --cfg job`)."
        if key == override.key_or_group:
            return message + f" To add a new key on purpose, write +{key}={value}."
        return message + f" To add new keys on purpose, write ++{override.input_line}."

    def suggest_group(self, key: str, value: str) -> str | None:
        """`experiement=resnet`: the user meant a config group, not a key."""
        if "." in key:
            return None
        for group in difflib.get_close_matches(key, self.top_level_groups(), n=3, cutoff=0.8):
            if value in self.group_options(group):
                return f"+{group}={value}"
        return None


def _keys_set_by(override: Any) -> list[str]:
    """`a.b={c: 1, d: {e: 2}}` sets `a.b`, `a.b.c` and `a.b.d.e`: each must exist for Hydra to merge it."""
    keys = [override.key_or_group]
    if not override.is_sweep_override():
        stack = [(override.key_or_group, override.value())]
        while stack:
            prefix, value = stack.pop()
            if isinstance(value, dict):
                for name, child in value.items():
                    keys.append(f"{prefix}.{name}")
                    stack.append((f"{prefix}.{name}", child))
    return keys


def _trainer_argument_name(override: Any) -> str | None:
    """X of a plain `trainer.X=...` (not `+`, `++` or `~`: those say what they mean), else None."""
    if override.is_add() or override.is_force_add() or override.is_delete():
        return None
    segments = override.key_or_group.split(".")
    return segments[1] if len(segments) == 2 and segments[0] == "trainer" else None


@functools.lru_cache(maxsize=1)
def _trainer_parameters() -> frozenset[str]:
    """The keyword arguments of `lightning.pytorch.Trainer`; empty where Lightning is missing (no pass-through).

    Asked only once a `trainer.X` is missing from the config, and read from Lightning's source first: importing
    Lightning takes seconds, which a typo (`trainer.max_epoch=3`) should not wait for.
    """
    return _trainer_parameters_from_source() or _trainer_parameters_from_signature()


def _trainer_parameters_from_source() -> frozenset[str]:
    """`Trainer.__init__`'s parameters from `lightning/pytorch/trainer/trainer.py`, parsed, not imported."""
    try:
        spec = importlib.util.find_spec("lightning")  # a top-level package: located, not imported
        if spec is None or not spec.submodule_search_locations:
            return frozenset()
        source = Path(list(spec.submodule_search_locations)[0]) / "pytorch" / "trainer" / "trainer.py"
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except Exception:
        return frozenset()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Trainer":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    arguments = [*item.args.args, *item.args.kwonlyargs]
                    return frozenset(a.arg for a in arguments if a.arg != "self")
    return frozenset()


def _trainer_parameters_from_signature() -> frozenset[str]:
    try:
        from lightning.pytorch import Trainer
    except Exception:
        return frozenset()
    parameters = inspect.signature(Trainer.__init__).parameters.values()
    return frozenset(p.name for p in parameters
                     if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _is_hydra_key(key_or_group: str) -> bool:
    return key_or_group == "hydra" or key_or_group.startswith(("hydra.", "hydra/"))


def _suggest_key(cfg: DictConfig, key: str, parent: DictConfig, depth: int,
                 extra_siblings: frozenset[str] = frozenset()) -> str | None:
    """A sibling of the mistyped segment whose full path exists, else the closest of all keys in the config.

    `extra_siblings`: names that may stand at `depth` without being in the config (Trainer arguments).
    """
    segments = key.split(".")
    all_keys = [k for k in _dotted_keys(cfg) if not _is_hydra_key(k)]
    prefix = segments[:depth]
    rest = segments[depth + 1:]
    siblings = [str(k) for k in parent.keys() if k != "hydra"]
    siblings += sorted(extra_siblings.difference(siblings))
    for sibling in difflib.get_close_matches(segments[depth], siblings, n=3, cutoff=0.6):
        candidate = ".".join([*prefix, sibling, *rest])
        if candidate in all_keys or (not rest and sibling in extra_siblings):
            return candidate
    tails = sorted((k for k in all_keys if k.endswith("." + key)), key=len)  # `max_epochs` -> `trainer.max_epochs`
    if tails:
        return tails[0]
    # Elsewhere in the tree (`optimizer.lrr` -> `model.optimizer.lr`), judged by the last name: full paths that
    # share a long prefix look alike whatever their last names (`model.optimizer.momentum` is not `...lr`).
    last = segments[-1]
    same_last = [k for k in all_keys if difflib.SequenceMatcher(None, last, k.rsplit(".", 1)[-1]).ratio() >= 0.8]
    close = difflib.get_close_matches(key, same_last, n=1, cutoff=0.5)
    return close[0] if close else None


def _dotted_keys(node: DictConfig, prefix: str = "") -> Iterator[str]:
    """Every key path of `node` (containers and leaves), without resolving interpolations."""
    if node._is_none() or node._is_missing() or node._is_interpolation():
        return
    for name in node.keys():
        path = f"{prefix}{name}"
        yield path
        child = node._get_node(name)
        if isinstance(child, DictConfig):
            yield from _dotted_keys(child, path + ".")
