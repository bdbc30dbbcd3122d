"""The Dockerfile parser: directives, continuations, comments, flags, JSON forms, heredocs,
and the text the legacy builder prints for each step (BuildKit's parser package semantics)."""
from __future__ import annotations

import pytest

from sampan.build.dockerfile import DockerfileError, Heredoc, parse


def one(text: str):
    instructions = parse(text).instructions
    assert len(instructions) == 1, instructions
    return instructions[0]


def test_simple_instructions_and_lines() -> None:
    df = parse("FROM alpine\n\nRUN echo hi\ncmd [\"sh\"]\n")
    assert [(i.keyword, i.rest, i.line, i.end_line) for i in df.instructions] == [
        ("FROM", "alpine", 1, 1), ("RUN", "echo hi", 3, 3), ("CMD", '["sh"]', 4, 4)]
    assert df.escape == "\\" and df.directives == {}
    assert df.instructions[2].original == 'cmd ["sh"]'  # as written, keyword case kept


def test_bytes_crlf_and_bom() -> None:
    df = parse(b"\xef\xbb\xbfFROM alpine\r\nRUN a \\\r\n  b\r\n")
    assert [i.rest for i in df.instructions] == ["alpine", "a   b"]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "# syntax=x\n"])
def test_no_instructions(text: str) -> None:
    with pytest.raises(DockerfileError, match="file with no instructions"):
        parse(text)


def test_unknown_instruction_names_the_line() -> None:
    with pytest.raises(DockerfileError) as caught:
        parse("FROM alpine\n# c\nRUNN x\n")
    assert str(caught.value) == "Dockerfile:3: unknown instruction: RUNN"


# --- parser directives -------------------------------------------------------------------

def test_directives() -> None:
    df = parse("# syntax=docker/dockerfile:1\n#ESCAPE = `\n# check=skip=all\nFROM x\n")
    assert df.directives == {"syntax": "docker/dockerfile:1", "escape": "`", "check": "skip=all"}
    assert df.escape == "`"


def test_directives_only_at_the_top() -> None:
    # after a comment, a blank line or an instruction a directive is just a comment
    assert parse("# hello\n# escape=`\nFROM x\n").escape == "\\"
    assert parse("\n# escape=`\nFROM x\n").escape == "\\"
    assert parse("FROM x\n# escape=`\nRUN a\n").directives == {}


def test_unknown_directive_is_a_comment_and_ends_directives() -> None:
    df = parse("# unknown=1\n# escape=`\nFROM x\n")
    assert df.directives == {} and df.escape == "\\"


def test_duplicate_and_invalid_directives() -> None:
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: only one escape parser directive can be used$"):
        parse("# escape=`\n# escape=\\\nFROM x\n")
    with pytest.raises(DockerfileError, match=r"^Dockerfile:1: invalid escape token 'x' does not match"):
        parse("# escape=x\nFROM x\n")


def test_backtick_escape_continues_lines() -> None:
    df = parse("# escape=`\nFROM x\nRUN dir C:\\ `\n  && echo \\\n")
    assert df.instructions[1].rest == "dir C:\\   && echo \\"
    assert df.instructions[1].escape == "`"


# --- continuations and comments ------------------------------------------------------------

def test_continuation_skips_comments_and_blank_lines_and_warns() -> None:
    df = parse("FROM x\nRUN apt-get update \\\n    # a comment\n\n    && apt-get install -y curl\nUSER me\n")
    run = df.instructions[1]
    assert run.rest == "apt-get update     && apt-get install -y curl"
    assert (run.line, run.end_line) == (2, 5)
    assert df.instructions[2].line == 6
    assert df.warnings[0].startswith("[WARNING]: Empty continuation line found in:")


def test_continuation_at_end_of_file_and_escaped_escape() -> None:
    assert parse("FROM x\nRUN a \\").instructions[1].rest == "a"
    # an escaped escape at the end does not continue the line
    df = parse("FROM x\nRUN echo \\\\\nUSER me\n")
    assert [i.keyword for i in df.instructions] == ["FROM", "RUN", "USER"]


def test_comment_needs_hash_at_line_start() -> None:
    df = parse("FROM x\n   # indented comment\nRUN echo # not a comment\n")
    assert [i.rest for i in df.instructions] == ["x", "echo # not a comment"]


def test_original_is_the_joined_logical_line() -> None:
    run = parse("FROM x\n  RUN   a \\\n  b  \n").instructions[1]
    assert run.original == "RUN   a   b"


# --- flags -------------------------------------------------------------------------------------

def test_flags_in_order_with_values_and_bools() -> None:
    copy = one("COPY --from=build --chown=1000:1000 --chmod=0755 --link --parents --exclude=*.md "
               "--exclude=x src/ /dst/")
    assert copy.flags == [("from", "build"), ("chown", "1000:1000"), ("chmod", "0755"), ("link", None),
                          ("parents", None), ("exclude", "*.md"), ("exclude", "x")]
    assert copy.rest == "src/ /dst/"


def test_flags_quotes_and_double_dash() -> None:
    run = one('RUN --mount=type=cache,target="/root/.cache" --network=none -- --not-a-flag')
    assert run.flags == [("mount", "type=cache,target=/root/.cache"), ("network", "none")]
    assert run.rest == "--not-a-flag"
    assert one("RUN -x --y").flags == []  # flags stop at the first word not starting with --


# --- JSON vs shell form ------------------------------------------------------------------------

@pytest.mark.parametrize("rest,expected", [
    ('["echo", "a b"]', ["echo", "a b"]),
    ('  [ "a" ]', ["a"]),
    ("[]", []),
    ('["a"] trailing', ["a"]),  # Go's json.Decoder stops after the first value
    ("[not json]", None),
    ("['single']", None),
    ('["a", "b"', None),
    ("echo [a]", None),
])
def test_json_form(rest: str, expected) -> None:
    assert one(f"CMD {rest}").json == expected


def test_json_form_must_be_strings() -> None:
    with pytest.raises(DockerfileError, match="^Dockerfile:1: when using JSON array syntax, arrays must be"):
        parse('CMD ["a", 1]')


def test_json_only_for_exec_form_instructions() -> None:
    assert one('ENV A ["x"]').json is None
    assert one('VOLUME ["/a", "/b"]').json == ["/a", "/b"]
    assert one('HEALTHCHECK --interval=5s CMD ["true"]').json == ["true"]
    assert one("HEALTHCHECK CMD true").json is None


# --- heredocs ------------------------------------------------------------------------------------

def test_run_heredoc() -> None:
    run = parse("FROM x\nRUN <<EOF\necho $HOME\n  indented\nEOF\nUSER me\n").instructions[1]
    assert run.rest == "<<EOF" and run.json is None
    assert run.heredocs == [Heredoc("EOF", "echo $HOME\n  indented\n", True, False)]
    assert (run.line, run.end_line) == (2, 5)
    assert run.original == "RUN <<EOF"


def test_heredoc_chomp_strips_leading_tabs() -> None:
    run = one("RUN <<-EOT\n\techo a\n\t\techo b\n  c\n\tEOT\n")
    assert run.heredocs == [Heredoc("EOT", "echo a\necho b\n  c\n", True, True)]


@pytest.mark.parametrize("word", ["<<'EOF'", '<<"EOF"', "<<E'OF'"])
def test_quoted_delimiter_means_no_expansion(word: str) -> None:
    run = one(f"RUN {word}\necho $A\nEOF\n")
    assert run.heredocs == [Heredoc("EOF", "echo $A\n", False, False)]


def test_several_heredocs_on_one_line() -> None:
    run = one("RUN <<A cat /dev/stdin - <<-B > /out\nfirst\nA\n\tsecond\n\tB\n")
    assert [(h.name, h.content) for h in run.heredocs] == [("A", "first\n"), ("B", "second\n")]
    assert run.end_line == 5


def test_copy_heredoc_and_fd() -> None:
    copy = one("COPY --chmod=755 <<EOF /usr/bin/hello\n#!/bin/sh\necho hi\nEOF\n")
    assert copy.heredocs == [Heredoc("EOF", "#!/bin/sh\necho hi\n", True, False)]
    assert copy.rest == "<<EOF /usr/bin/hello"
    assert one("RUN cat 3<<EOF\nx\nEOF\n").heredocs[0].name == "EOF"


def test_heredoc_body_keeps_comments_and_blank_lines() -> None:
    run = one("RUN <<EOF\n# not dropped\n\nEOF\n")
    assert run.heredocs[0].content == "# not dropped\n\n"


def test_no_heredocs_where_not_allowed() -> None:
    df = parse('FROM x\nCMD <<EOF\nRUN ["cat", "<<EOF"]\n')
    assert all(i.heredocs == [] for i in df.instructions)
    assert [i.keyword for i in df.instructions] == ["FROM", "CMD", "RUN"]
    assert one("RUN echo '<<EOF'").heredocs == []
    assert one("RUN a<<b").heredocs == []


def test_onbuild_heredoc() -> None:
    ins = one("ONBUILD RUN <<EOF\necho built\nEOF\n")
    assert ins.heredocs[0].content == "echo built\n"


def test_unterminated_heredoc() -> None:
    with pytest.raises(DockerfileError, match="^Dockerfile:2: unterminated heredoc$"):
        parse("FROM x\nRUN <<EOF\necho\n")
