"""The line of each key and value of JSON text that `json` has already parsed, and its duplicate keys
(`json` silently keeps the last). Kept by hand: PyYAML's composer miscounts after a raw U+2028 in a
string and refuses tab indentation, and json-source-map keeps one of duplicate keys and compares keys
undecoded (tests/test_catalog.py, `test_json_lines_where_...`).
"""

from __future__ import annotations

import json
import re
from typing import cast

from reconciler.catalog.problems import Doc, JsonPath

_WS = re.compile(r"[ \t\n\r]*")
_SCALAR = re.compile(r"-?[0-9][0-9.eE+-]*|true|false|null")


class JsonLines:
    """Walks valid JSON text once more to learn the line of each key and value, and finds duplicate
    keys (`json` silently keeps the last)."""

    def __init__(self, doc: Doc, text: str) -> None:
        self.doc, self.text = doc, text
        self.line, self.pos = 1, 0

    def _line_at(self, pos: int) -> int:
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line

    def _skip(self, i: int) -> int:
        match = _WS.match(self.text, i)
        assert match is not None
        return match.end()

    def value(self, i: int, path: JsonPath) -> int:
        i = self._skip(i)
        self.doc.value_lines.setdefault(path, self._line_at(i))
        char = self.text[i]
        if char == "{":
            seen: set[str] = set()
            i = self._skip(i + 1)
            if self.text[i] == "}":
                return i + 1
            while True:
                i = self._skip(i)
                line = self._line_at(i)
                key, i = json.decoder.scanstring(self.text, i + 1)  # type: ignore[attr-defined]
                key_path = (*path, key)
                if key in seen:
                    first = self.doc.key_lines[key_path]
                    self.doc.report(key_path, f"duplicate key (first given at line {first})", line)
                else:
                    seen.add(key)
                    self.doc.key_lines[key_path] = line
                i = self._skip(i) + 1  # ':'
                i = self._skip(self.value(i, key_path))
                if self.text[i] == "}":
                    return i + 1
                i += 1  # ','
        if char == "[":
            i = self._skip(i + 1)
            if self.text[i] == "]":
                return i + 1
            index = 0
            while True:
                i = self._skip(self.value(i, (*path, index)))
                index += 1
                if self.text[i] == "]":
                    return i + 1
                i += 1  # ','
        if char == '"':
            return cast(int, json.decoder.scanstring(self.text, i + 1)[1])  # type: ignore[attr-defined]
        match = _SCALAR.match(self.text, i)
        assert match is not None
        return match.end()
