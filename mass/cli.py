"""The `mass` command line: one subcommand per recipe, each configured by a dataclass.

    mass <command> [--config FILE.yaml] [--<setting> VALUE ...] [key.sub=value ...]

Settings merge as defaults <- YAML file <- command line; `mass <command> --help` lists every
setting with its default. Errors a user can fix print one `error:` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass

from mass.config import format_help, load_config
from mass.errors import MassError


@dataclass(frozen=True)
class Command:
    module: str  # holds the config dataclass and `run(cfg, **flags)`
    config: str  # name of the config dataclass in the module
    summary: str
    flags: tuple[str, ...] = ()  # boolean switches passed to run() as keywords
    positional: str | None = None  # a config key that may be given as the first bare argument


# Recipes are named, not imported: a command imports only its own recipe when it runs, so that
# `mass --help` and a mistyped command answer at once instead of after loading every recipe.
COMMANDS = {
    "pretrain": Command("mass.pretrain", "PretrainConfig", "train the embedded MiniMath model from scratch",
                        flags=("resume",)),
    "eval": Command("mass.evaluate", "EvalConfig", "evaluate a method on a math benchmark"),
    "meta-train": Command("mass.meta_train", "MetaTrainConfig", "meta-train the MASS scorer and generator",
                          flags=("resume",)),
    "grpo": Command("mass.grpo", "SolverGRPOConfig", "train the Solver GRPO baseline (GRPO on solving)",
                    flags=("resume",)),
    "table": Command("mass.table", "TableConfig", "train what is missing, evaluate every method, write the table"),
    "solve": Command("mass.solve", "SolveConfig", "adapt to one problem at test time and show the work",
                     positional="problem"),
    "headroom": Command("mass.headroom", "HeadroomConfig",
                        "measure what test-time adaptation could do at best (memorisation, curriculum, ideal scorer)"),
    "synth": Command("mass.synth_report", "SynthConfig", "measure the model's synthesised examples (parse rate, correctness)"),
    "bench metagrad": Command("mass.bench_metagrad", "MetaGradBenchConfig",
                              "time and peak memory of one meta-step per meta-gradient mode"),
    "bench adapt": Command("mass.bench_adapt", "AdaptBenchConfig",
                           "seconds per problem of Base and each adapting method, with the breakdown"),
}


def command_parser(name: str) -> argparse.ArgumentParser:
    command = COMMANDS[name]
    cls = _config_class(command)
    p = argparse.ArgumentParser(
        prog=f"mass {name}", description=f"mass {name}: {command.summary}.\n\n"
        + (sys.modules[command.module].__doc__ or "").strip(),
        epilog="settings (top-level ones also as --name VALUE; nested ones as group.name=VALUE):\n" + format_help(cls),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file of settings (overridden by the command line)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show the libraries' warnings and weight-loading bars (hidden by default)")
    for flag in command.flags:
        p.add_argument(f"--{flag}", action="store_true", help=f"{flag} (see above)")
    for f in dataclasses.fields(cls):
        if not dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name]):
            p.add_argument(f"--{f.name.replace('_', '-')}", dest=f"set_{f.name}", metavar="VALUE", help=argparse.SUPPRESS)
    if command.positional:
        p.add_argument(command.positional, nargs="?", default=None, help=f"the {command.positional} (may contain '=')")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings, e.g. sampling.temperature=0.7")
    return p


def usage() -> str:
    lines = [__doc__.strip(), "", "commands:"]
    lines += [f"  {name:<15} {c.summary}" for name, c in COMMANDS.items()]
    lines += ["", "`mass <command> --help` explains every setting of a command."]
    return "\n".join(lines)


def _config_class(command: Command) -> type:
    return getattr(importlib.import_module(command.module), command.config)


def quiet_libraries(verbose: bool) -> None:
    """Hide what transformers, PEFT and torch print on every run (deprecation warnings, "Loading
    weights" bars): a user should see our progress bars and results. `-v` shows them again."""
    import warnings

    from transformers.utils import logging as hf_logging

    if verbose:
        hf_logging.set_verbosity_warning()
        hf_logging.enable_progress_bar()
        return

    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|peft|torch)(\.|$)")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from mass import __version__

        print(f"mass {__version__}")
        return 0
    words = 2 if argv[0] == "bench" and len(argv) > 1 and not argv[1].startswith("-") else 1
    name = " ".join(argv[:words])  # `mass bench metagrad`: a command of two words
    if name not in COMMANDS:
        print(f"error: unknown command '{name}'; use one of {', '.join(COMMANDS)} (see mass --help)", file=sys.stderr)
        return 2
    args = command_parser(name).parse_intermixed_args(argv[words:])
    command = COMMANDS[name]
    overrides = list(args.overrides)
    overrides += [f"{k[4:]}={v}" for k, v in vars(args).items() if k.startswith("set_") and v is not None]
    quiet_libraries(args.verbose)
    try:
        cfg = load_config(_config_class(command), args.config, overrides)
        if command.positional and getattr(args, command.positional) is not None:
            text = getattr(args, command.positional)
            key = text.split("=", 1)[0]
            if "=" in text and key.split(".")[0] in {f.name for f in dataclasses.fields(cfg)}:
                overrides.insert(0, text)  # it was a key=value setting, not the positional
                cfg = load_config(_config_class(command), args.config, overrides)
            else:
                cfg = dataclasses.replace(cfg, **{command.positional: text})
        run: Callable = getattr(sys.modules[command.module], "run")
        run(cfg, **{flag: getattr(args, flag) for flag in command.flags})
    except MassError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if "mass.dist" in sys.modules:  # a recipe may have joined a process group: leave it cleanly
            sys.modules["mass.dist"].close()  # (not imported here: `mass --help` loads no torch)
    return 0
