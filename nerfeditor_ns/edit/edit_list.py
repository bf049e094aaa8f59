"""``ns-edit --edits-file FILE``: several independent edits of one run in one command.

FILE holds one edit per line in ns-edit's own flags (``--prompt "tanned skin"``, ``--direction pc:0:-2 --output-dir
outputs/darker``); the command line's other flags are shared by every line and a line may override them (the line's
flags come last). Blank lines and ``#`` comments are skipped.

- Every line is parsed and checked (:func:`nerfeditor_ns.edit.checks.validate_inputs`: the edit, images, networks,
  output directory) before the first edit starts, and two lines writing the same output directory are refused, so a
  mistake on line 9 is found at once, not after eight edits. Nothing is written before every line has passed.
- The edits then run one after another (:func:`nerfeditor_ns.edit.run.run_edit`, each exactly as a single ``ns-edit``
  of that line would run it); they share the run's scene cache, so every edit after the first reads the
  edit-independent steps from it.
- An edit that fails (an :class:`EditError` raised while it runs) is reported and the next one starts; the summary
  lists every line's result and the exit status is non-zero when any failed.
- Re-running the same command resumes: a line whose output directory already holds a finished edit with the same
  settings (its ``edit.json``) is skipped; an interrupted one resumes from its cached steps, as a single edit does.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from nerfeditor_ns.edit.args import EDIT_MODES, EditArgs
from nerfeditor_ns.edit.errors import EditError

FLAG = "--edits-file"
FLAG_SPELLINGS = (FLAG, "--edits_file")


@dataclass
class ListedEdit:
    """One line of the edits file, parsed."""

    file: Path
    """The edits file."""
    line: int
    """Line number in the file (1-based)."""
    text: str
    """The line as written (for messages and the summary)."""
    args: EditArgs
    """The command's shared flags with the line's flags applied."""


def read_edit_lines(path: Path) -> List[Tuple[int, str, List[str]]]:
    """``(line number, text, flags)`` of every edit line of ``path`` (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise EditError(f"{FLAG} {path} is not a file.", "pass a text file with one edit per line, e.g. "
                        '`--prompt "tanned skin"` or `--direction pc:0:-2`.')
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise EditError(f"{FLAG} {path} cannot be read as text: {err}.", "save it as a UTF-8 text file.") from None
    edits: List[Tuple[int, str, List[str]]] = []
    for number, text in enumerate(lines, start=1):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            flags = shlex.split(stripped, comments=True)
        except ValueError as err:
            raise EditError(f"{path}, line {number}: {err} in {stripped!r}.",
                            "close the quotes around values with spaces (--prompt \"tanned skin\").") from None
        if any(f.split("=", 1)[0] in FLAG_SPELLINGS for f in flags):
            raise EditError(f"{path}, line {number}: {FLAG} inside the edits file.",
                            "list the edits themselves, one per line.")
        edits.append((number, stripped, flags))
    if not edits:
        raise EditError(f"{FLAG} {path} lists no edit.", "write one edit per line, e.g. `--direction pc:0:-2`.")
    return edits


def shared_flags(argv: Sequence[str]) -> List[str]:
    """The command line without ``--edits-file FILE`` (the flags every line shares)."""
    out: List[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if name in FLAG_SPELLINGS:
            skip = "=" not in token
            continue
        out.append(token)
    return out


def parse_edit_list(args: EditArgs, argv: Sequence[str], parse: Callable[[List[str]], Any]) -> List[ListedEdit]:
    """Every line of ``args.edits_file`` as :class:`EditArgs` (``parse``: ns-edit's own argument parser), the shared
    flags first. Refuses edit flags on the command line itself (each line holds its edit)."""
    on_command_line = ["--" + m.replace("_", "-") for m in EDIT_MODES if getattr(args, m) is not None]
    if on_command_line:
        raise EditError(f"{', '.join(on_command_line)} given beside {FLAG}.",
                        "put every edit in the file, one per line; the command line holds the flags they share.")
    shared = shared_flags(argv)
    listed = []
    for number, text, flags in read_edit_lines(args.edits_file):
        try:
            line_args = parse([*shared, *flags])
        except SystemExit:  # the parser has printed what it could not read
            raise EditError(f"{args.edits_file}, line {number}: ns-edit cannot read {text!r} (see above).",
                            "write the line in ns-edit's own flags, as on its command line.") from None
        if not isinstance(line_args, EditArgs):
            raise EditError(f"{args.edits_file}, line {number}: {text!r} is not an edit.",
                            "each line holds one edit's flags (no subcommands).")
        listed.append(ListedEdit(Path(args.edits_file), number, text, line_args))
    return listed


def same_finished_edit(run_dir: Path, args: EditArgs) -> bool:
    """``run_dir`` holds a finished edit made with ``args`` (its edit.json's settings: every flag given equal)."""
    import dataclasses

    from nerfeditor_ns.edit.run_dir import EDIT_RECORD, is_finished_run

    if not is_finished_run(run_dir):
        return False
    try:
        recorded = json.loads((Path(run_dir) / EDIT_RECORD).read_text()).get("settings")
    except (OSError, json.JSONDecodeError):
        return False
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(args).items()}
    settings = json.loads(json.dumps(settings, default=str))
    # a flag left at None is resolved by the edit (e.g. --in-domain-yaw from the capture), which edit.json records
    return isinstance(recorded, dict) and set(recorded) == set(settings) and all(
        value is None or recorded[name] == value for name, value in settings.items())


def check_edit_list(listed: Sequence[ListedEdit]) -> Dict[int, str]:
    """Check every line as ns-edit checks one edit (no torch; nothing written) and refuse two lines writing one
    output directory. Returns ``{line: why skipped}`` for lines already done (the same finished edit in place)."""
    from nerfeditor_ns.edit.checks import edit_spec, output_dir_of, validate_inputs
    from nerfeditor_ns.edit.errors import OutputExistsError

    done: Dict[int, str] = {}
    outputs: Dict[Path, int] = {}
    for item in listed:
        where = f"{item.file}, line {item.line} ({item.text})"
        try:
            final = validate_inputs(item.args).run.final
        except OutputExistsError as err:  # raised after every other check passed
            mode = item.args.edit_mode()
            final = output_dir_of(item.args, mode, edit_spec(item.args, mode))
            if not same_finished_edit(final, item.args):
                raise EditError(f"{where}: {err.problem}", err.fix) from None
            done[item.line] = f"done before: {final}"
        except EditError as err:
            raise EditError(f"{where}: {err.problem}", err.fix) from None
        if final in outputs:
            raise EditError(f"{item.file}: lines {outputs[final]} and {item.line} both write {final}.",
                            "give each line its own --output-dir (or leave it out: the default name is per edit).")
        outputs[final] = item.line
    return done


def run_edit_list(args: EditArgs, argv: Sequence[str], parse: Callable[[List[str]], Any],
                  run_one: Optional[Callable[[EditArgs], Path]] = None) -> int:
    """Check every line, run the edits in order, print a summary; returns the exit status (0: every line done)."""
    from rich.markup import escape

    from nerfeditor_ns.edit.context import console

    if run_one is None:
        from nerfeditor_ns.edit.run import run_edit as run_one
    out = console()
    listed = parse_edit_list(args, argv, parse)
    done = check_edit_list(listed)
    out.print(f"{len(listed)} edits in {escape(str(args.edits_file))}, all checked"
              + (f"; {len(done)} done before (skipped)" if done else ""))
    results: List[Tuple[ListedEdit, str, str]] = []
    for k, item in enumerate(listed, start=1):
        if item.line in done:
            results.append((item, "skipped", done[item.line]))
            continue
        out.rule(f"[bold]edit {k} of {len(listed)}[/bold]: line {item.line}: {escape(item.text)}")
        try:
            final = run_one(item.args)
        except EditError as err:
            out.print(f"[bold red]edit {k} of {len(listed)} (line {item.line}) failed:[/bold red] {escape(str(err))}")
            results.append((item, "failed", str(err).splitlines()[0]))
            continue
        finally:
            _release_gpu_memory()
        results.append((item, "done", str(final)))
    out.rule("[bold]edits")
    for item, status, detail in results:
        colour = {"done": "green", "skipped": "cyan", "failed": "red"}[status]
        out.print(f"line {item.line} [{colour}]{status}[/{colour}]: {escape(item.text)} -> {escape(detail)}",
                  soft_wrap=True)
    return 2 if any(status == "failed" for _, status, _ in results) else 0


def _release_gpu_memory() -> None:
    """Hand the finished edit's cached CUDA blocks back before the next edit (no-op on the CPU)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
