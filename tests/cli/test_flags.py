"""runc-style flag parsing: both dash styles, =values, repeated flags, stop at positionals."""
import pytest

from sampan import fastjson
from sampan.cli.flags import Flag, UsageError, parse

FLAGS = [Flag(("bundle", "b"), "str", "."), Flag(("detach", "d")), Flag(("env", "e"), "multi")]


def test_long_short_and_single_dash_long_forms():
    p = parse(["-bundle", "/b", "-d", "--env=A=1", "-e", "B=2", "id"], FLAGS)
    assert p["bundle"] == "/b" and p["detach"] is True and p["env"] == ["A=1", "B=2"] and p.args == ["id"]


def test_flags_after_positionals_are_flags_like_runc():
    p = parse(["id", "--detach", "KILL"], FLAGS)
    assert p["detach"] is True and p.args == ["id", "KILL"]


def test_non_interspersed_parsing_stops_at_first_positional():
    p = parse(["id", "--detach"], FLAGS, interspersed=False)
    assert p["detach"] is False and p.args == ["id", "--detach"]


def test_unknown_flag_and_missing_value_are_usage_errors():
    with pytest.raises(UsageError, match="not defined"):
        parse(["--nope"], FLAGS)
    with pytest.raises(UsageError, match="needs an argument"):
        parse(["--bundle"], FLAGS)


def test_fastjson_matches_the_json_module():
    import json
    doc = {"a": [1, 2.5, None, True, "é\"\n"], "b": {"c": -1}}
    assert fastjson.dumps(doc) == json.dumps(doc)
    assert fastjson.loads(json.dumps(doc)) == doc
    for bad in ("", "{", "{} x", "[1,]"):
        with pytest.raises(ValueError):
            fastjson.loads(bad)


@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize("indent", ["    ", "\t", "  "])
def test_fastjson_indents_as_the_json_module(indent, ensure_ascii):
    import json
    doc = [{"a": [1, 2.5, None, True, "é\"\n", [], {}, [[]]], "b": {"c": -1, "d": {"e": ["x"]}}, "": {}}, [], 3,
           {1: "int key", True: "bool key", None: "null key", 2.5: "float key"}]
    assert fastjson.dumps_indented(doc, indent, ensure_ascii) == json.dumps(doc, indent=indent, ensure_ascii=ensure_ascii)
    assert fastjson.dumps_indented({}, indent) == "{}" and fastjson.dumps_indented("s", indent) == '"s"'
