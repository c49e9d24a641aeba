"""The reference documents every setting and every check id the code has."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import django_pq
from django_pq.conf import SETTINGS, Setting

PACKAGE = Path(django_pq.__file__).resolve().parent
REFERENCE = PACKAGE.parent / "docs" / "reference"
CHECK_ID = re.compile(r"django_pq\.[EW]\d{3}")


def _code_check_ids() -> set[str]:
    """Every check id written in the modules that define checks."""
    ids: set[str] = set()
    for module in ("checks.py", "conf.py", "backend.py"):
        ids.update(CHECK_ID.findall((PACKAGE / module).read_text(encoding="utf-8")))
    return ids


def _sections(page: str) -> dict[str, str]:
    """A reference page's sections: heading text (without `#` and backticks) -> body."""
    path = REFERENCE / page
    assert path.exists(), f"{path} is missing"
    sections: dict[str, str] = {}
    heading = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip().strip("`")
            sections[heading] = ""
        elif heading:
            sections[heading] += line + "\n"
    return sections


def test_the_code_has_check_ids() -> None:
    ids = _code_check_ids()
    assert {"django_pq.E001", "django_pq.E021"} <= ids
    assert {setting.check_id for setting in SETTINGS} <= ids


@pytest.mark.parametrize("setting", SETTINGS, ids=[setting.name for setting in SETTINGS])
def test_setting_is_in_the_settings_reference(setting: Setting) -> None:
    sections = _sections("settings.md")
    assert setting.name in sections, f"docs/reference/settings.md has no ## `{setting.name}`"
    assert setting.check_id in sections[setting.name], (
        f"the {setting.name} section of docs/reference/settings.md does not name "
        f"its check, {setting.check_id}"
    )


@pytest.mark.parametrize("setting", SETTINGS, ids=[setting.name for setting in SETTINGS])
def test_the_documented_default_is_the_real_one(setting: Setting) -> None:
    section = _sections("settings.md")[setting.name]
    row = re.search(r"^\| `[^`]+` \| (.+?) \| \[`django_pq", section, re.MULTILINE)
    assert row, f"the {setting.name} section has no | Type | Default | Check | row"
    shown = (
        json.dumps(setting.default) if isinstance(setting.default, str) else repr(setting.default)
    )
    assert f"`{shown}`" in row.group(1), (
        f"docs/reference/settings.md gives {setting.name} the default {row.group(1)}; "
        f"conf.SETTINGS says {setting.default!r}"
    )


@pytest.mark.parametrize("check_id", sorted(_code_check_ids()))
def test_check_id_is_in_the_checks_reference(check_id: str) -> None:
    assert check_id in _sections("checks.md"), f"docs/reference/checks.md has no ## `{check_id}`"


def test_checks_reference_documents_no_unknown_ids() -> None:
    """A documented id the code no longer has must say it is retired: ids are never reused."""
    sections = _sections("checks.md")
    for check_id in set(sections) & set(CHECK_ID.findall("\n".join(sections))):
        if check_id not in _code_check_ids():
            assert "retired" in sections[check_id].lower(), (
                f"{check_id} is documented in checks.md but no check gives it"
            )


BASE_OPTIONS = {
    "--help",
    "--version",
    "--verbosity",
    "--settings",
    "--pythonpath",
    "--traceback",
    "--no-color",
    "--force-color",
    "--skip-checks",
}


def _command_flags() -> list[tuple[str, str]]:
    from django.core.management import load_command_class

    flags = []
    for module in sorted((PACKAGE / "management" / "commands").glob("pq_*.py")):
        command = load_command_class("django_pq", module.stem)
        parser = command.create_parser("manage.py", module.stem)
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in BASE_OPTIONS:
                    flags.append((module.stem, option))
    return flags


@pytest.mark.parametrize(("command", "flag"), _command_flags())
def test_every_command_flag_is_in_the_reference(command: str, flag: str) -> None:
    pages = [REFERENCE / "commands.md", *REFERENCE.glob("*.md")]
    page_text = {page: page.read_text(encoding="utf-8") for page in pages}
    # The command's own section (or page) must name the flag.
    holders = [page.name for page, text in page_text.items() if command in text and flag in text]
    assert holders, f"{command} {flag} is not documented in docs/reference/"
