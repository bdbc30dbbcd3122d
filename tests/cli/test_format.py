"""The one Go-template renderer and tabwriter of the CLI, and the display of Docker's JSON
progress streams (plain lines off a terminal, rich bars on one)."""
from __future__ import annotations

import io
import os
import pty
import select

import pytest

from sampan.cli import format as fmt
from sampan.cli.command import StreamError
from sampan.cli.progress import JSONProgress

DATA = {"Id": "x", "T": True, "N": None, "E": [],
        "Config": {"Cmd": ["sh", "-c"], "Labels": {"b": "2", "a": "1"}},
        "Mounts": [{"Source": "/a", "RW": True}, {"Source": "/b", "RW": False}],
        "Ports": {"80/tcp": [{"HostPort": "8080"}]}}


def test_table_is_tabwriter_as_docker_sets_it_up():
    assert fmt.table([["A", "LONGER HEADER", "C"], ["value", "x", "last"]]) == \
        "A         LONGER HEADER   C\nvalue     x               last\n"


@pytest.mark.parametrize("template, expected", [
    ("{{.Id}} {{.Config.Cmd}} {{json .Config.Cmd}} {{join .Config.Cmd \",\"}}", 'x [sh -c] ["sh","-c"] sh,-c'),
    ("{{.Config.Labels}} {{index .Config.Labels \"b\"}} {{.N}} {{.Nope}}", "map[a:1 b:2] 2 <no value> <no value>"),
    ("{{.Id | upper}} {{len .Config.Cmd}} {{lower \"AB\"}} {{title \"ab\"}}", "X 2 ab Ab"),
    ("{{range .Mounts}}{{.Source}}:{{.RW}} {{end}}", "/a:true /b:false "),
    ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}},{{end}}", "a=1,b=2,"),
    ("{{range $i, $m := .Mounts}}{{$i}}{{$m.Source}}{{end}}", "0/a1/b"),
    ("{{range .E}}x{{else}}none{{end}}", "none"),
    ("{{if .T}}y{{else}}n{{end}} {{if .E}}1{{else if .N}}2{{else}}3{{end}} {{if not .N}}nil{{end}}", "y 3 nil"),
    ("{{with .Config}}{{.Cmd}}{{end}} {{with .N}}x{{else}}empty{{end}}", "[sh -c] empty"),
    ("{{(index (index .Ports \"80/tcp\") 0).HostPort}}", "8080"),
    ("{{range .Mounts -}} {{.Source}} {{- end}}", "/a/b"),
    ("{{$c := .Config.Cmd}}{{index $c 1}} {{eq .Id \"x\"}} {{ne .Id \"x\"}}", "-c true false"),
    ("{{printf \"%s=%d\" .Id 3}} {{.Id | printf \"%q\"}} {{split \"a,b\" \",\"}}", 'x=3 "x" [a b]'),
    ("{{json .}}", None),
])
def test_templates(template, expected):
    out = fmt.render(template, DATA)
    if expected is None:
        assert out.startswith('{"Id":"x"')
    else:
        assert out == expected


@pytest.mark.parametrize("template", ["{{frobnicate .Id}}", "{{if .T}}x", "{{end}}", "{{.Id .T}}", "{{$nope}}"])
def test_template_errors(template):
    with pytest.raises(fmt.TemplateError):
        fmt.render(template, DATA)


def test_formatted_rows_json_table_and_template():
    rows = [{"A": "1", "B": "<x>"}, {"A": "22", "B": "y"}]
    headers = {"A": "AH", "B": "BH"}
    out = io.StringIO()
    fmt.write_formatted("json", rows, headers, out.write)
    assert out.getvalue() == '{"A":"1","B":"\\u003cx\\u003e"}\n{"A":"22","B":"y"}\n'
    out = io.StringIO()
    fmt.write_formatted("table", rows, headers, out.write, default="table {{.B}}\\t{{.A}}")
    assert out.getvalue() == "BH        AH\n<x>       1\ny         22\n"
    out = io.StringIO()
    fmt.write_formatted("{{.A}}-{{.B}}", rows, headers, out.write)
    assert out.getvalue() == "1-<x>\n22-y\n"


PULL = [{"status": "1: Pulling from cli/busybox"},
        {"status": "Pulling fs layer", "id": "abc", "progressDetail": {}},
        {"status": "Downloading", "id": "abc", "progressDetail": {"current": 500, "total": 1000}},
        {"status": "Pull complete", "id": "abc", "progressDetail": {}},
        {"stream": "Loaded image: x\n"}]


def test_progress_off_a_terminal_is_docker_lines():
    out = io.StringIO()
    with JSONProgress(out) as progress:
        progress.show_all(PULL)
    assert out.getvalue() == "1: Pulling from cli/busybox\nabc: Pulling fs layer\nabc: Pull complete\nLoaded image: x\n"
    quiet = io.StringIO()
    with JSONProgress(quiet, quiet=True) as progress:
        progress.show_all(PULL)
    assert quiet.getvalue() == "Loaded image: x\n"
    with pytest.raises(StreamError, match="^boom$"):
        JSONProgress(io.StringIO()).show({"errorDetail": {"message": "boom"}, "error": "boom"})


def test_progress_on_a_terminal_draws_bars():
    master, slave = pty.openpty()
    term = os.fdopen(slave, "w")
    try:
        with JSONProgress(term) as progress:
            progress.show_all(PULL)
        term.flush()
        shown = b""
        while select.select([master], [], [], 0.2)[0]:
            shown += os.read(master, 65536)
    finally:
        term.close()
        os.close(master)
    text = shown.decode(errors="replace")
    assert "abc: Pull complete" in text and "1.0/1.0 kB" in text and "━" in text
