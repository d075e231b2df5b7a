"""Text nodes: ComfyUI 0.3.64's utils/string set and the newer text nodes (format, JSON).

The 0.3.64 nodes keep that release's contract (category ``utils/string``);
the newer ones carry current ComfyUI's (category ``text``).
"""

from __future__ import annotations

import json
import re
import string as _string
from typing import Any

from comfy_kernel.nodes import io

from .common import NodeDef

MODULE = "comfy_extras.nodes_string"
CATEGORY = "utils/string"


def _flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    flags = 0
    if case_insensitive:
        flags |= re.IGNORECASE
    if multiline:
        flags |= re.MULTILINE
    if dotall:
        flags |= re.DOTALL
    return flags


def _text(id: str, **kw: Any) -> io.Input:
    return io.String.Input(id, multiline=True, **kw)


class StringConcatenate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="StringConcatenate", display_name="Concatenate", category=CATEGORY,
                         inputs=[_text("string_a"), _text("string_b"),
                                 io.String.Input("delimiter", multiline=False, default="")],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, string_a: str, string_b: str, delimiter: str) -> io.NodeOutput:
        return io.NodeOutput(delimiter.join((string_a, string_b)))


class StringSubstring(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="StringSubstring", display_name="Substring", category=CATEGORY,
                         inputs=[_text("string"), io.Int.Input("start"), io.Int.Input("end")],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, string: str, start: int, end: int) -> io.NodeOutput:
        return io.NodeOutput(string[start:end])


class StringLength(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="StringLength", display_name="Length", category=CATEGORY,
                         inputs=[_text("string")], outputs=[io.Int.Output(display_name="length")])

    @classmethod
    def execute(cls, string: str) -> io.NodeOutput:
        return io.NodeOutput(len(string))


class CaseConverter(io.ComfyNode):
    MODES = ["UPPERCASE", "lowercase", "Capitalize", "Title Case"]

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="CaseConverter", display_name="Case Converter", category=CATEGORY,
                         inputs=[_text("string"), io.Combo.Input("mode", options=cls.MODES)],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, string: str, mode: str) -> io.NodeOutput:
        convert = {"UPPERCASE": str.upper, "lowercase": str.lower, "Capitalize": str.capitalize,
                   "Title Case": str.title}.get(mode)
        return io.NodeOutput(convert(string) if convert else string)


class StringTrim(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="StringTrim", display_name="Trim", category=CATEGORY,
                         inputs=[_text("string"), io.Combo.Input("mode", options=["Both", "Left", "Right"])],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, string: str, mode: str) -> io.NodeOutput:
        trim = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}.get(mode)
        return io.NodeOutput(trim(string) if trim else string)


class StringReplace(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="StringReplace", display_name="Replace", category=CATEGORY,
                         inputs=[_text("string"), _text("find"), _text("replace")],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, string: str, find: str, replace: str) -> io.NodeOutput:
        return io.NodeOutput(string.replace(find, replace))


class StringContains(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="StringContains", display_name="Contains", category=CATEGORY,
                         inputs=[_text("string"), _text("substring"),
                                 io.Boolean.Input("case_sensitive", default=True)],
                         outputs=[io.Boolean.Output(display_name="contains")])

    @classmethod
    def execute(cls, string: str, substring: str, case_sensitive: bool) -> io.NodeOutput:
        if not case_sensitive:
            string, substring = string.lower(), substring.lower()
        return io.NodeOutput(substring in string)


class StringCompare(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="StringCompare", display_name="Compare", category=CATEGORY,
                         inputs=[_text("string_a"), _text("string_b"),
                                 io.Combo.Input("mode", options=["Starts With", "Ends With", "Equal"]),
                                 io.Boolean.Input("case_sensitive", default=True)],
                         outputs=[io.Boolean.Output()])

    @classmethod
    def execute(cls, string_a: str, string_b: str, mode: str, case_sensitive: bool) -> io.NodeOutput:
        a, b = (string_a, string_b) if case_sensitive else (string_a.lower(), string_b.lower())
        if mode == "Equal":
            return io.NodeOutput(a == b)
        if mode == "Starts With":
            return io.NodeOutput(a.startswith(b))
        if mode == "Ends With":
            return io.NodeOutput(a.endswith(b))
        return io.NodeOutput(None)


def _regex_flags() -> list[io.Input]:
    return [io.Boolean.Input("case_insensitive", default=True), io.Boolean.Input("multiline", default=False),
            io.Boolean.Input("dotall", default=False)]


class RegexMatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="RegexMatch", display_name="Regex Match", category=CATEGORY,
                         inputs=[_text("string"), _text("regex_pattern"), *_regex_flags()],
                         outputs=[io.Boolean.Output(display_name="matches")])

    @classmethod
    def execute(cls, string: str, regex_pattern: str, case_insensitive: bool, multiline: bool,
                dotall: bool) -> io.NodeOutput:
        try:
            found = re.search(regex_pattern, string, _flags(case_insensitive, multiline, dotall)) is not None
        except re.error:
            found = False
        return io.NodeOutput(found)


def regex_extract(string: str, pattern: str, mode: str, flags: int, group_index: int) -> str:
    """RegexExtract's result; an invalid pattern, no match or a group that did not take part give ``""``."""
    try:
        if mode == "First Match":
            match = re.search(pattern, string, flags)
            return match.group(0) if match else ""
        if mode == "All Matches":
            found = re.findall(pattern, string, flags)
            return "\n".join(m[0] if isinstance(m, tuple) else m for m in found)
        if mode == "First Group":
            match = re.search(pattern, string, flags)
            if match and len(match.groups()) >= group_index and match.group(group_index) is not None:
                return match.group(group_index)
            return ""
        if mode == "All Groups":
            picked = [m.group(group_index) for m in re.finditer(pattern, string, flags)
                      if m.groups() and len(m.groups()) >= group_index and m.group(group_index) is not None]
            return "\n".join(picked)
    except re.error:
        return ""
    return ""


class RegexExtract(io.ComfyNode):
    MODES = ["First Match", "All Matches", "First Group", "All Groups"]

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="RegexExtract", display_name="Regex Extract", category=CATEGORY,
                         inputs=[_text("string"), _text("regex_pattern"), io.Combo.Input("mode", options=cls.MODES),
                                 *_regex_flags(), io.Int.Input("group_index", default=1, min=0, max=100)],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, string: str, regex_pattern: str, mode: str, case_insensitive: bool, multiline: bool,
                dotall: bool, group_index: int) -> io.NodeOutput:
        flags = _flags(case_insensitive, multiline, dotall)
        return io.NodeOutput(regex_extract(string, regex_pattern, mode, flags, group_index))


class RegexReplace(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RegexReplace", display_name="Regex Replace", category=CATEGORY,
            description="Replaces the matches of a regular expression (re.sub syntax, \\1 for groups).",
            inputs=[_text("string"), _text("regex_pattern"), _text("replace"),
                    io.Boolean.Input("case_insensitive", default=True, optional=True),
                    io.Boolean.Input("multiline", default=False, optional=True),
                    io.Boolean.Input("dotall", default=False, optional=True,
                                     tooltip="Let '.' match newlines too."),
                    io.Int.Input("count", default=0, min=0, max=100, optional=True,
                                 tooltip="How many matches to replace; 0 replaces all.")],
            outputs=[io.String.Output()])

    @classmethod
    def execute(cls, string: str, regex_pattern: str, replace: str, case_insensitive: bool = True,
                multiline: bool = False, dotall: bool = False, count: int = 0) -> io.NodeOutput:
        flags = _flags(case_insensitive, multiline, dotall)
        return io.NodeOutput(re.sub(regex_pattern, replace, string, count=count, flags=flags))


# -- newer than ComfyUI 0.3.64 -------------------------------------------------------------------


class _SafeFormatter(_string.Formatter):
    """``str.format`` without private attributes: ``{a.__class__...}`` could walk into module globals."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        import _string as parser

        _first, rest = parser.formatter_field_name_split(field_name)
        for is_attr, key in rest:
            if is_attr and str(key).startswith("_"):
                raise ValueError(f"Format field '{field_name}' uses a private attribute")
        return super().get_field(field_name, args, kwargs)


def format_text(template: str, values: dict[str, Any]) -> str:
    return _SafeFormatter().vformat(template, (), values)


class StringFormat(io.ComfyNode):
    """``str.format`` over up to 26 linked values named ``a`` .. ``z`` (private attributes refused)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        names = io.Autogrow.TemplateNames(input=io.AnyType.Input("value"), names=list(_string.ascii_lowercase),
                                          min=0)
        return io.Schema(node_id="StringFormat", display_name="Format Text", category="text",
                         search_aliases=["string", "format"],
                         description="Formats the text with Python's str.format, the inputs named a..z.",
                         inputs=[io.Autogrow.Input("values", template=names),
                                 io.String.Input("f_string", default="{a}", multiline=True)],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, values: dict[str, Any], f_string: str) -> io.NodeOutput:
        return io.NodeOutput(format_text(f_string, values))


def json_extract(text: str, key: str) -> str:
    """The value of ``key`` in the first JSON object found in ``text`` (as str; ``""`` when absent)."""
    decoder = json.JSONDecoder()
    for brace in re.finditer(r"\{", text):
        try:
            data, _ = decoder.raw_decode(text, brace.start())
        except json.JSONDecodeError:
            continue
        value = data.get(key)
        return "" if value is None else str(value)
    return ""


class JsonExtractString(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="JsonExtractString", display_name="Extract Text from JSON", category="text",
                         search_aliases=["json", "extract json", "parse json", "json value", "read json"],
                         description="Reads one key of the first JSON object in the text (Markdown fences "
                                     "around it are fine).",
                         inputs=[io.String.Input("json_string", multiline=True),
                                 io.String.Input("key", multiline=False)],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, json_string: str, key: str) -> io.NodeOutput:
        return io.NodeOutput(json_extract(json_string, key))


def dump_json(value: Any, indent: int) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent or None)


_INDENT_TOOLTIP = "Spaces per level; 0 writes one compact line."


class ConvertDictionaryToString(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="ConvertDictionaryToString", display_name="Convert Dictionary to String",
                         category="text",
                         search_aliases=["json", "dict to json", "stringify", "serialize", "dict to string"],
                         inputs=[io.Dict.Input("dictionary"),
                                 io.Int.Input("indent", default=2, min=0, max=8, tooltip=_INDENT_TOOLTIP)],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, dictionary: dict, indent: int = 2) -> io.NodeOutput:
        return io.NodeOutput(dump_json(dictionary, indent))


class ConvertArrayToString(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="ConvertArrayToString", display_name="Convert Array to String", category="text",
                         search_aliases=["json", "list to json", "stringify", "serialize", "list to string",
                                         "array to json"],
                         inputs=[io.Array.Input("array"),
                                 io.Int.Input("indent", default=2, min=0, max=8, tooltip=_INDENT_TOOLTIP)],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, array: list, indent: int = 2) -> io.NodeOutput:
        return io.NodeOutput(dump_json(array, indent))


NODES = [
    NodeDef("StringConcatenate", StringConcatenate, "Concatenate", MODULE),
    NodeDef("StringSubstring", StringSubstring, "Substring", MODULE),
    NodeDef("StringLength", StringLength, "Length", MODULE),
    NodeDef("CaseConverter", CaseConverter, "Case Converter", MODULE),
    NodeDef("StringTrim", StringTrim, "Trim", MODULE),
    NodeDef("StringReplace", StringReplace, "Replace", MODULE),
    NodeDef("StringContains", StringContains, "Contains", MODULE),
    NodeDef("StringCompare", StringCompare, "Compare", MODULE),
    NodeDef("RegexMatch", RegexMatch, "Regex Match", MODULE),
    NodeDef("RegexExtract", RegexExtract, "Regex Extract", MODULE),
    NodeDef("RegexReplace", RegexReplace, "Regex Replace", MODULE),
    NodeDef("StringFormat", StringFormat, "Format Text", MODULE),
    NodeDef("JsonExtractString", JsonExtractString, "Extract Text from JSON", MODULE),
    NodeDef("ConvertDictionaryToString", ConvertDictionaryToString, "Convert Dictionary to String", MODULE),
    NodeDef("ConvertArrayToString", ConvertArrayToString, "Convert Array to String", MODULE),
]
