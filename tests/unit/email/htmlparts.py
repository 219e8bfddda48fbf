"""Reading rendered HTML the way a mail client does: tags with their attributes, and visible text."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_HEAD = re.compile(r"<head>.*?</head>", re.S)
_PREHEADER = re.compile(r'<div class="preheader"[^>]*>(.*?)</div>', re.S)


class Parsed(HTMLParser):
    """Every start tag with its attributes, the visible body text and the preheader of one HTML part."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.feed(html)
        found = _PREHEADER.search(html)
        self.preheader = _text_of(found.group(1)) if found else ""
        # Text outside head and the preheader: what the reader sees in the message body.
        body = _Text()
        body.feed(_PREHEADER.sub("", _HEAD.sub("", html)))
        self.visible = " ".join(" ".join(body.parts).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))

    def with_class(self, name: str) -> list[dict[str, str]]:
        return [attrs for _, attrs in self.elements if name in attrs.get("class", "").split()]

    def tags(self, tag: str) -> list[dict[str, str]]:
        return [attrs for found, attrs in self.elements if found == tag]


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _text_of(fragment: str) -> str:
    text = _Text()
    text.feed(fragment)
    # The preheader ends in invisible padding characters (combining grapheme joiners, zero-width non-joiners).
    return " ".join("".join(text.parts).replace("\u034f", "").replace("\u200c", "").split())
