"""``ns-edit --edits-file``: several edits of one run in one command (the tiny run of tests/conftest.py).

Every line is checked before the first edit starts; the edits run one after another through the real ``run_edit``,
sharing the run's scene cache; each gives what a single ns-edit of that line gives; a re-run skips what is done; a
failing line is reported and the next one still runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nerfeditor_ns.edit import cli
from nerfeditor_ns.edit.edit_list import run_edit_list, shared_flags
from nerfeditor_ns.edit.errors import EditError
from tests.helpers.tiny_runs import edit_argv, tree_digest

SCENE_STEPS = ("render", "crops", "masks", "invert", "adjustor", "gen_finetune", "original_views")


def _metrics_without_path(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("edited_run")
    return metrics


def test_shared_flags_drop_only_the_edits_file():
    assert shared_flags(["--a", "1", "--edits-file", "f.txt", "--b"]) == ["--a", "1", "--b"]
    assert shared_flags(["--edits-file=f.txt", "--a", "1"]) == ["--a", "1"]
    assert shared_flags(["--edits_file", "f.txt"]) == []


def test_two_edits_in_one_command_share_the_scene_cache_and_equal_single_edits(tiny_workspace, tmp_path, capsys):
    ws = tiny_workspace
    root = ws["root"]
    edits = tmp_path / "edits.txt"
    edits.write_text(f"# two directions of one run\n--direction pc:0:+2 --output-dir {root / 'list_a'}\n\n"
                     f"--direction 'pc:1:-2' --output-dir {root / 'list_b'}  # the second\n")
    argv = [*edit_argv(ws, out="unused"), "--edits-file", str(edits)]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "2 edits in" in err and "edit 2 of 2" in err and not (root / "unused").exists()
    records = [json.loads((root / name / "edit.json").read_text()) for name in ("list_a", "list_b")]
    assert [r["edit"]["value"] for r in records] == ["pc:0:+2", "pc:1:-2"]
    assert all(records[1]["step_sources"][name] == "scene cache" for name in SCENE_STEPS)  # shared with edit 1
    assert tree_digest(ws["run"]) == ws["digest"]  # the original run untouched

    # the second line as a single ns-edit gives the same result
    assert cli.main(edit_argv(ws, "--direction", "pc:1:-2", out="list_b_single")) == 0
    assert _metrics_without_path(root / "list_b") == _metrics_without_path(root / "list_b_single")
    capsys.readouterr()

    # the same command again: both lines are done, nothing is redone or touched
    before = [tree_digest(root / name) for name in ("list_a", "list_b")]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("skipped") >= 2 and "edit 1 of 2" not in err
    assert [tree_digest(root / name) for name in ("list_a", "list_b")] == before


def test_every_line_is_checked_before_any_edit_starts(tiny_workspace, tmp_path, capsys):
    ws = tiny_workspace
    edits = tmp_path / "edits.txt"
    edits.write_text(f"--direction pc:0:+1 --output-dir {tmp_path / 'x'}\n--direction pc:zero:1 --output-dir "
                     f"{tmp_path / 'y'}\n")
    assert cli.main([*edit_argv(ws, out="unused"), "--edits-file", str(edits)]) == 2
    err = capsys.readouterr().err
    assert f"{edits}, line 2" in err and "pc:zero:1" in err
    assert not any(tmp_path.glob("x*")) and not any(tmp_path.glob("y*"))  # nothing written for line 1 either

    edits.write_text(f"--direction pc:0:+1 --output-dir {tmp_path / 'x'}\n--direction pc:1:+1 --output-dir "
                     f"{tmp_path / 'x'}\n")
    assert cli.main([*edit_argv(ws, out="unused"), "--edits-file", str(edits)]) == 2
    assert "lines 1 and 2 both write" in capsys.readouterr().err

    assert cli.main([*edit_argv(ws, "--direction", "pc:0:+1", out="unused"), "--edits-file", str(edits)]) == 2
    assert "--direction given beside --edits-file" in capsys.readouterr().err

    edits.write_text("# nothing here\n\n")
    assert cli.main([*edit_argv(ws, out="unused"), "--edits-file", str(edits)]) == 2
    assert "lists no edit" in capsys.readouterr().err


def test_a_failing_edit_is_reported_and_the_next_one_runs(tiny_workspace, tmp_path, capsys):
    ws = tiny_workspace
    edits = tmp_path / "edits.txt"
    edits.write_text(f"--direction pc:0:+1 --output-dir {tmp_path / 'x'}\n--direction pc:1:+1 --output-dir "
                     f"{tmp_path / 'y'}\n")
    argv = [*edit_argv(ws, out="unused"), "--edits-file", str(edits)]
    ran = []

    def run_one(args):
        ran.append(args.direction)
        if args.direction == "pc:0:+1":
            raise EditError("the domain check refused the frontal crop [red].", "use another generator.")  # not markup
        return args.output_dir

    assert run_edit_list(cli.parse(argv), argv, cli.parse, run_one=run_one) == 2
    assert ran == ["pc:0:+1", "pc:1:+1"]
    err = capsys.readouterr().err
    assert "line 1 failed" in err and "frontal crop [red]." in err and "line 2 done" in err


def test_lines_must_be_readable_edits(tiny_workspace, tmp_path, capsys):
    ws = tiny_workspace
    edits = tmp_path / "edits.txt"
    for text, expected in (('--prompt "unclosed\n', "No closing quotation"), ("--bogus 1\n", "cannot read"),
                           (f"--edits-file {edits}\n", "inside the edits file")):
        edits.write_text(text)
        with pytest.raises(EditError, match=expected):
            run_edit_list(cli.parse([*edit_argv(ws, out="u"), "--edits-file", str(edits)]),
                          [*edit_argv(ws, out="u"), "--edits-file", str(edits)], cli.parse, run_one=lambda a: None)
    capsys.readouterr()
