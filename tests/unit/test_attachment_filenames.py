"""Blocked extensions stay blocked under whatever a receiver strips, splits or folds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.mail.filenames import BLOCKED_EXTENSIONS, is_blocked_filename

stems = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_ ", min_size=1, max_size=20)
extensions = st.sampled_from(sorted(BLOCKED_EXTENSIONS))
trailers = st.text(alphabet=". \u3000\u00a0", max_size=6)
streams = st.sampled_from(["", "::$DATA", ":x", ":x:$DATA", "::$DATA. "])


@given(stems, extensions, streams, trailers, st.booleans())
def test_a_blocked_extension_is_found_after_anything_windows_drops(
    stem: str, ext: str, stream: str, trailer: str, upper: bool
) -> None:
    name = f"{stem}{ext.upper() if upper else ext}{stream}{trailer}"
    assert is_blocked_filename(name), name


@given(stems, extensions)
def test_a_blocked_extension_hidden_as_a_stream_of_a_harmless_file_is_found(stem: str, ext: str) -> None:
    assert is_blocked_filename(f"{stem}.txt:{stem}{ext}")


@pytest.mark.parametrize(
    "name",
    ['evil.exe"', "evil.ex?e", "evil.exe*", "dir\\evil.exe\\", "dir/evil.exe/", "evil.\uff45\uff58\uff45"],
)
def test_forbidden_characters_paths_and_compatibility_forms_do_not_hide_it(name: str) -> None:
    assert is_blocked_filename(name)


@pytest.mark.parametrize(
    "name",
    ["report.pdf", "report.exe.pdf", "notes.txt.", "Meeting 10:30.pdf", "exe", "my.exercise.docx", "a.exe_"],
)
def test_lookalikes_are_not_blocked(name: str) -> None:
    assert not is_blocked_filename(name)
