"""Run from outside the project root: the bundled dataset is still found, or the error says where it looked; nothing
is created in the current folder before validation."""

from __future__ import annotations

import pytest

from harness import cli, cli_commands
from harness.data import DataError
from tests.conftest import BUNDLED, write_image


def test_the_bundled_dataset_is_found_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_commands.bundled_data(None).resolve() == BUNDLED.resolve()
    given = tmp_path / "mine"
    assert cli_commands.bundled_data(given) == given  # --data always wins


def test_a_dataset_in_the_current_folder_comes_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "data" / "small-book-images" / "train" / "a" / "x.jpg", (1, 2, 3))
    assert cli_commands.bundled_data(None) == cli_commands.DEFAULT_DATA


def test_no_dataset_anywhere_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_commands, "DEFAULT_DATA", cli_commands.Path("data/nothing-here"))
    with pytest.raises(DataError, match=r"looked in .*nothing-here and .*nothing-here; pass --data DIR"):
        cli_commands.bundled_data(None)


def test_a_bad_run_from_another_folder_creates_nothing_there(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["run", "--profile", "smoke", "--variants", "imagenet-heavy"])
    assert code == 2 and "imagenet-heavy" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
