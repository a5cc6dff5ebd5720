"""The docs pages stay short, linked and free of history.

The README is a front page of at most 150 lines; every relative link in it, in
``docs/``, in ``bench/README.md`` and in ``CHANGELOG.md`` points at a file that
exists (and, with a ``#fragment`` into a Markdown page, at one of its headings);
and no page names the issue, round or working session a change came from,
which means nothing to a reader and goes stale at once.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

MAX_README_LINES = 150

#: Every page a reader is sent to, each read by the checks below.
PAGES = sorted(
    [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "bench" / "README.md"]
    + list((ROOT / "docs").glob("*.md")),
)

FENCED_BLOCK = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
#: ``[text](target)`` and ``![alt](target)``, with an optional "title".
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: ``[label]: target`` reference definitions.
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)

#: Where a change came from, which the pages must not say: issue and round numbers
#: and working sessions. ("Better Auth session" and "session token" are fine.)
HISTORY_PHRASES = [
    re.compile(r"\bissues?\s+#?\d+", re.IGNORECASE),
    re.compile(r"\brounds?[\s-]+\d+", re.IGNORECASE),
    re.compile(r"\b(?:first|second|third|next|final)\s+(?:performance\s+)?round\b", re.IGNORECASE),
    re.compile(r"\bsessions?\s+#?\d+", re.IGNORECASE),
    re.compile(
        r"\b(?:this|that|last|previous|earlier|later|current|working|coding)\s+session\b",
        re.IGNORECASE,
    ),
]


def prose(markdown: str) -> str:
    """The text outside code blocks and code spans, where links and history can hide."""
    return INLINE_CODE.sub("", FENCED_BLOCK.sub("", markdown))


def relative_links(markdown: str) -> list[str]:
    """Every link target that is not a web or mail address (in-page anchors included)."""
    text = prose(markdown)
    targets = INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    text = INLINE_CODE.sub(lambda m: m.group(0).strip("`"), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's fragment, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCED_BLOCK.sub("", markdown)):
        slug = anchor(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file (or heading) does not exist."""
    broken = []
    for target in relative_links(page.read_text()):
        path_part, _, fragment = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        missing_heading = (
            path.exists()
            and path.suffix == ".md"
            and bool(fragment)
            and fragment not in anchors(path.read_text())
        )
        if not path.exists() or missing_heading:
            broken.append(target)
    return broken


def history_phrases(markdown: str) -> list[str]:
    """Phrases that say which issue, round or session a change came from."""
    text = prose(markdown)
    return [match.group(0) for pattern in HISTORY_PHRASES for match in pattern.finditer(text)]


def test_the_pages_exist():
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    for name in (
        "README.md",
        "CHANGELOG.md",
        "bench/README.md",
        "docs/api.md",
        "docs/architecture.md",
        "docs/authentication.md",
        "docs/configuration.md",
        "docs/deploy.md",
        "docs/development.md",
        "docs/frontends.md",
    ):
        assert name in names


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; keep it under {MAX_README_LINES} and move"
        " detail to a page in docs/"
    )


def test_the_readme_links_every_docs_page():
    linked = {
        (ROOT / target.partition("#")[0]).resolve()
        for target in relative_links((ROOT / "README.md").read_text())
    }
    for page in PAGES:
        assert page.resolve() in linked or page.name == "README.md" and page.parent == ROOT


def test_the_readme_says_httptools_is_required():
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `httptools`"))
    assert "required" in row and "web/http_protocol.py" in row


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_points_at_something(page: Path):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_no_page_tells_where_a_change_came_from(page: Path):
    assert history_phrases(page.read_text()) == []


# --- the checks themselves fail when they should ---------------------------------------


def test_a_missing_file_or_heading_is_a_broken_link(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "api.md").write_text("# The API\n\n## Routes and errors\n")
    page = tmp_path / "README.md"
    page.write_text(
        "# Top\n"
        "See [the API](docs/api.md), [routes](docs/api.md#routes-and-errors) and [top](#top).\n"
        "Gone: [deploy](docs/deploy.md), [a heading](docs/api.md#no-such-heading), [x](#x),\n"
        "[ref]: docs/missing.md\n"
        "Not links: [web](https://example.com), `[code](nowhere.md)`,\n"
        "```\n[in a block](nowhere.md)\n```\n"
    )
    assert broken_links(page) == [
        "docs/deploy.md",
        "docs/api.md#no-such-heading",
        "#x",
        "docs/missing.md",
    ]


def test_headings_become_githubs_anchors():
    markdown = "# Deploy and operate\n## `DB_PGBOUNCER`: PgBouncer\n## Roles\n## Roles\n"
    assert anchors(markdown) == {
        "deploy-and-operate",
        "db_pgbouncer-pgbouncer",
        "roles",
        "roles-1",
    }


def test_history_phrases_are_found_and_ordinary_words_are_not():
    found = history_phrases(
        "Added in issue 13, tuned in round 2 (round-1 too), written this session;"
        " see issue #7 and session 4."
    )
    assert found == ["issue 13", "issue #7", "round 2", "round-1", "session 4", "this session"]
    assert (
        history_phrases(
            "Better Auth session tokens; the session's expiry; a known issue with proxies;"
            " `issue 13` in code is not prose; PgBouncer's session pooling."
        )
        == []
    )
