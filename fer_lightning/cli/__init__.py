"""The command-line shells, and nothing else: each parses its arguments and calls the library.

| command | console script | `python -m` form | library it calls |
| --- | --- | --- | --- |
| train | `fer-train` | `python -m fer_lightning` | `fer_lightning.train.train` |
| evaluate | `fer-evaluate` | `python -m fer_lightning.evaluate` | `fer_lightning.evaluation.evaluate` |
| predict | `fer-predict` | `python -m fer_lightning.predict` | `fer_lightning.inference.pipeline.run` |
| export | `fer-export` | `python -m fer_lightning.export` | `fer_lightning.inference.export` |
| report | `fer-report` | `python -m fer_lightning.report` | `fer_lightning.reporting.write_report` |

Train and evaluate are Hydra apps (config groups, sweeps, run folders); predict and export take plain
``key=value`` over a typed dataclass (no config tree, no run folder, instant start); report takes a folder.
Library modules never import from here: a test enforces it.
"""
