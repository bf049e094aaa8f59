"""``ns-edit``: edit a trained nerfeditor run with a StyleGAN2 edit and save the result as a new run.

    ns-edit --load-config outputs/<scene>/nerfeditor/<run>/config.yml --prompt "tanned skin" --generator G.pkl --clip C
    ns-edit --load-config <run>/config.yml --generator G.pkl --edits-file edits.txt   # one edit per line, one command
    ns-edit train-mapper --generator G.pkl        # train the hidden mapper for a generator ahead of time
    ns-edit eval --load-config outputs/<scene>/nerfeditor/<run>-edit-.../config.yml --vgg V --arcface A --clip C
    ns-edit alpha-config --load-config <edited run>/config.yml --alpha 0   # a config that renders the original
    ns-edit cache list --load-config <run>/config.yml   # the steps every edit of the run shares, and their disk use
    ns-edit cache clean --load-config <run>/config.yml  # remove them
    ns-edit masks --data <capture>                      # person masks in <capture>/foreground_masks/ (faces extra)

Argument parsing imports only tyro and the standard library, so ``ns-edit --help`` is fast; torch, nerfstudio and the
networks are imported once the arguments are known to be valid.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence, Union

import tyro
from typing_extensions import Annotated

from nerfeditor_ns.edit.args import AlphaConfigArgs, EditArgs, TrainMapperArgs
from nerfeditor_ns.edit.cache_args import CacheCleanArgs, CacheListArgs
from nerfeditor_ns.edit.capture_masks import MasksArgs
from nerfeditor_ns.edit.errors import EditError, EditInterrupted
from nerfeditor_ns.edit.eval_args import EvalArgs

__all__ = ["AlphaConfigArgs", "EditArgs", "TrainMapperArgs", "EvalArgs", "CacheListArgs", "CacheCleanArgs", "MasksArgs",
           "parse", "main", "entrypoint"]

TRAIN_MAPPER = "train-mapper"
EVAL = "eval"
ALPHA_CONFIG = "alpha-config"
CACHE = "cache"
MASKS = "masks"
CacheCommand = Union[
    Annotated[CacheListArgs, tyro.conf.subcommand("list")],
    Annotated[CacheCleanArgs, tyro.conf.subcommand("clean")],
]


def _fail(err: BaseException, code: int) -> int:
    from rich.console import Console
    from rich.text import Text

    # plain Text: messages contain brackets ([num_ws, w_dim]) that rich would otherwise read as markup
    Console(stderr=True, soft_wrap=True).print(Text("ns-edit: error: ", style="bold red") + Text(str(err)))
    return code


def parse(argv: Sequence[str]):
    """Parse ``argv`` (without the program name) into :class:`EditArgs`, :class:`TrainMapperArgs` or
    :class:`EvalArgs` / :class:`AlphaConfigArgs` / :class:`CacheListArgs` / :class:`CacheCleanArgs`."""
    argv = list(argv)
    if argv and argv[0] == TRAIN_MAPPER:
        return tyro.cli(TrainMapperArgs, args=argv[1:], prog=f"ns-edit {TRAIN_MAPPER}")
    if argv and argv[0] == EVAL:
        return tyro.cli(EvalArgs, args=argv[1:], prog=f"ns-edit {EVAL}")
    if argv and argv[0] == ALPHA_CONFIG:
        return tyro.cli(AlphaConfigArgs, args=argv[1:], prog=f"ns-edit {ALPHA_CONFIG}")
    if argv and argv[0] == MASKS:
        return tyro.cli(MasksArgs, args=argv[1:], prog=f"ns-edit {MASKS}")
    if argv and argv[0] == CACHE:
        return tyro.cli(CacheCommand, args=argv[1:], prog=f"ns-edit {CACHE}",  # type: ignore[call-overload]
                        description="Show or remove the scene cache of a run (the steps every edit of it shares).")
    return tyro.cli(EditArgs, args=argv, prog="ns-edit")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ns-edit``; returns the exit status (0 ok, 2 bad input, 3 stopped by the test hook, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    try:
        if isinstance(args, EditArgs) and args.edits_file is not None:
            from nerfeditor_ns.edit.edit_list import run_edit_list

            return run_edit_list(args, argv, parse)
        if isinstance(args, TrainMapperArgs):
            from nerfeditor_ns.edit.run import run_train_mapper

            run_train_mapper(args)
        elif isinstance(args, EvalArgs):
            from nerfeditor_ns.edit.eval_cmd import run_eval

            run_eval(args)
        elif isinstance(args, AlphaConfigArgs):
            from nerfeditor_ns.edit.alpha_config import run_alpha_config

            run_alpha_config(args)
        elif isinstance(args, MasksArgs):
            from nerfeditor_ns.edit.capture_masks import run_masks

            run_masks(args)
        elif isinstance(args, (CacheListArgs, CacheCleanArgs)):
            from nerfeditor_ns.edit.run import run_cache_command

            run_cache_command(args)
        else:
            from nerfeditor_ns.edit.run import run_edit

            run_edit(args)
    except EditError as err:
        return _fail(err, 2)
    except EditInterrupted as err:
        return _fail(f"{err}; re-run the same command to resume.", 3)
    except KeyboardInterrupt:
        return _fail("interrupted; re-run the same command to resume from the cached steps.", 130)
    return 0


def entrypoint() -> None:
    """Console script ``ns-edit``."""
    from nerfeditor_ns.edit.dependency_notices import quieten_dependency_notices

    quieten_dependency_notices()
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
