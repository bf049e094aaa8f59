"""``ns-edit alpha-config``: a copy of an edited run's ``config.yml`` that opens at another style alpha.

An edited run's config opens at alpha = 1 (``pipeline.model.default_alpha``), so ns-viewer, ns-render, ns-eval and
ns-export show the edit. Those tools take no model options; this writes a second config, identical but for
``default_alpha``, that they load instead (e.g. alpha 0: the original scene, bit-identical to the original run's
renders since the alpha = 0 branch is frozen during an edit). The run itself is not modified.
"""

from __future__ import annotations

import re
from pathlib import Path

from nerfeditor_ns.edit.args import AlphaConfigArgs
from nerfeditor_ns.edit.errors import EditError

_DEFAULT_ALPHA_LINE = re.compile(r"^(\s+default_alpha:[ \t]*)\S+[ \t]*$", flags=re.MULTILINE)


def default_output(load_config: Path, alpha: float) -> Path:
    """``config_alpha<alpha>.yml`` next to ``load_config`` (``config_alpha0.yml``, ``config_alpha0.5.yml``)."""
    return Path(load_config).with_name(f"config_alpha{alpha:g}.yml")


def write_alpha_config(args: AlphaConfigArgs) -> Path:
    """Write the copy of ``args.load_config`` at ``args.alpha``; returns its path. Raises EditError on bad input.

    The copy is the config's text with only its ``default_alpha:`` line changed (a YAML dump of the loaded config
    would re-pickle the tensors in it); it is read back to check that it loads with that alpha.
    """
    import yaml

    from nerfeditor_ns.edit.checks import read_run_header
    from nerfeditor_ns.io_utils import atomic_write_text

    path = Path(args.load_config)
    read_run_header(path)  # a nerfeditor run's config.yml (checked as text, before anything is constructed)
    alpha = float(args.alpha)
    if not 0.0 <= alpha <= 1.0:
        raise EditError(f"--alpha {args.alpha} is outside [0, 1].", "pass 0 for the original scene, 1 for the edit.")
    out = Path(args.output) if args.output is not None else default_output(path, alpha)
    if out.absolute() == path.absolute():
        raise EditError(f"--output {out} is the run's own config.", "pass another --output (or leave it out).")
    text = path.read_text()
    cfg = yaml.load(text, Loader=yaml.Loader)  # as nerfstudio's eval_setup reads it
    if not bool(getattr(cfg.pipeline.model, "finetune", False)):
        raise EditError(
            f"{path} is not a run written by ns-edit: it renders the same scene at every alpha.",
            "pass the config.yml of an edited run (ns-edit prints its path).",
        )
    new_text, count = _DEFAULT_ALPHA_LINE.subn(rf"\g<1>{alpha!r}", text)
    if count != 1 or yaml.load(new_text, Loader=yaml.Loader).pipeline.model.default_alpha != alpha:
        raise EditError(f"{path} has no single `default_alpha:` line to change.",
                        "edit `default_alpha:` under `model:` in a copy of the file by hand.")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, new_text)
    return out


def run_alpha_config(args: AlphaConfigArgs) -> Path:
    """The subcommand: write the copy and print how nerfstudio's tools use it."""
    from rich.console import Console

    out = write_alpha_config(args)
    console = Console(stderr=True, soft_wrap=True)
    console.print(f"wrote {out} (style alpha {float(args.alpha):g}); use it in place of the run's config.yml:")
    for command in ("ns-viewer", "ns-render interpolate", "ns-eval"):
        console.print(f"  {command} --load-config {out}", markup=False)
    return out
