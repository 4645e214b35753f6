"""Defaults that name a model or a source, read from the configuration when a command runs
rather than written into the command line's definition: the first use case in
config/use_case.yaml is the default model, and a use case's first declared source the default
source. No command names a use case or a source of its own.

A parser marks an argument as one of these with ``set_defaults``:

* ``model_default="ref"``: ``--model`` absent → ``<first model>@champion``;
* ``model_default="name"``: ``--model`` absent → ``<first model>``;
* ``source_default=True``: ``--source`` absent → the first source of ``--use-case`` (or of the
  first use case).
"""

from __future__ import annotations

import argparse

MODEL_HELP = "NAME@ALIAS or NAME@N (default: the first use case's model, @champion)"
MODEL_NAME_HELP = "registered model name (default: the first use case's)"
SOURCE_HELP = "catalogued source name (default: the use case's first declared source)"


def first_source(use_case: str | None) -> str:
    from hospital_mlops.use_case import load_use_case

    return next(iter(load_use_case(use_case=use_case).sources))


def fill(args: argparse.Namespace) -> None:
    """Resolve the marked defaults in place (a broken config is then a clear error of the
    command that needed it, not of every command's --help)."""
    form = getattr(args, "model_default", None)
    if form and getattr(args, "model", None) is None:
        from hospital_mlops.governance.config import first_model_name

        model = first_model_name()
        args.model = f"{model}@champion" if form == "ref" else model
    if getattr(args, "source_default", False) and getattr(args, "source", None) is None:
        args.source = first_source(getattr(args, "use_case", None))
