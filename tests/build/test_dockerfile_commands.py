"""Typed instructions: each keyword's forms, flags and errors (BuildKit's instructions
package), and `expanded()` substituting exactly where the legacy builder does."""
from __future__ import annotations

import pytest

from sampan.build.dockerfile import DockerfileError, Heredoc, command, parse
from sampan.build.dockerfile.commands import (
    Add, Arg, Cmd, Copy, Entrypoint, Env, Expose, From, Healthcheck, Label, Maintainer, Onbuild, Run, Shell,
    Stopsignal, User, Volume, Workdir)
from sampan.build.dockerfile.arguments import parse_duration

ENV = {"A": "1", "U": "app", "DIR": "/srv", "P": "8080", "IMG": "alpine:3.19", "EMPTY": ""}


def cmd(text: str):
    instructions = parse(text).instructions
    assert len(instructions) == 1
    return command(instructions[0])


def fails(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as caught:
        cmd(text)
    assert str(caught.value) == f"Dockerfile:1: {message}"


# --- FROM --------------------------------------------------------------------------------------

def test_from_forms() -> None:
    c = cmd("FROM --platform=linux/amd64 ${IMG} AS Builder")
    assert isinstance(c, From)
    assert (c.base, c.name, c.platform) == ("${IMG}", "builder", "linux/amd64")
    e = c.expanded(ENV, "\\")
    assert (e.base, e.name) == ("alpine:3.19", "builder")
    assert c.base == "${IMG}"  # expanded() returns a copy
    assert cmd("from scratch").name is None


def test_from_errors() -> None:
    fails("FROM a b", "FROM requires either one or three arguments")
    fails("FROM", "FROM requires either one or three arguments")
    fails("FROM a AS 1x", 'invalid name for build stage: "1x", name can\'t start with a number or contain symbols')
    fails("FROM --platform a", "missing a value on flag: platform")


# --- RUN, CMD, ENTRYPOINT ---------------------------------------------------------------------

def test_run_shell_and_exec_forms_are_not_expanded() -> None:
    run = cmd("RUN echo $A && ls")
    assert isinstance(run, Run)
    assert (run.args, run.shell_form) == (["echo $A && ls"], True)
    assert run.expanded(ENV, "\\").args == ["echo $A && ls"]
    run = cmd('RUN ["echo", "$A"]')
    assert (run.args, run.shell_form) == (["echo", "$A"], False)
    assert run.expanded(ENV, "\\").args == ["echo", "$A"]


def test_invalid_json_falls_back_to_shell_form() -> None:
    run = cmd("RUN [echo, a]")
    assert (run.args, run.shell_form) == (["[echo, a]"], True)


def test_run_mounts_and_network() -> None:
    run = cmd("RUN --mount=type=cache,target=/root/.cache,id=pip,sharing=locked,mode=0700,uid=1 "
              "--mount=type=bind,from=build,src=/out,dst=/in --mount=type=tmpfs,target=/t,size=1024 "
              "--mount=type=secret,id=tok --network=none make")
    assert run.mounts == [
        {"type": "cache", "target": "/root/.cache", "id": "pip", "sharing": "locked", "mode": 0o700, "uid": 1,
         "readonly": False},
        {"type": "bind", "from": "build", "source": "/out", "target": "/in", "readonly": True},
        {"type": "tmpfs", "target": "/t", "size": 1024, "readonly": False},
        {"type": "secret", "id": "tok", "readonly": True},
    ]
    assert run.network == "none"
    assert cmd("RUN --mount=target=/x,rw true").mounts == [{"type": "bind", "target": "/x", "readonly": False}]


def test_run_mount_values_are_expanded() -> None:
    run = cmd("RUN --mount=type=cache,target=${DIR}/cache true").expanded(ENV, "\\")
    assert run.mounts[0]["target"] == "/srv/cache"


@pytest.mark.parametrize("mount,message", [
    ("type=nfs,target=/x", 'unsupported mount type "nfs"'),
    ("type=bind,target=/x,bogus=1", "unexpected key 'bogus' in 'bogus=1'"),
    ("type=bind,target=/x,mode=0700", 'mode not allowed for "bind" type mounts'),
    ("type=bind,target=/x,sharing=shared", "invalid cache sharing set for bind mount"),
    ("type=cache,target=/x,sharing=wide", 'unsupported sharing value "wide"'),
    ("type=cache,target=/x,uid=me", "invalid value me for uid"),
    ("type=cache", "mount type cache requires a target"),
    ("type=cache,target=/x,nokey", "invalid field 'nokey' must be a key=value pair"),
])
def test_run_mount_errors(mount: str, message: str) -> None:
    fails(f"RUN --mount={mount} true", message)


def test_run_errors() -> None:
    fails("RUN --network=bridge true", 'unsupported network mode "bridge"')
    fails("RUN --foo true", "unknown flag: foo")
    fails("RUN --network=none --network=host true", "duplicate flag specified: network")
    fails("RUN", "RUN requires at least one argument")
    fails('RUN ["a", 2]', "when using JSON array syntax, arrays must be comprised of strings only")


def test_run_heredoc() -> None:
    run = cmd("RUN <<EOF\necho $A\nEOF\n")
    assert run.args == ["<<EOF"] and run.heredocs == [Heredoc("EOF", "echo $A\n", True, False)]
    assert run.expanded(ENV, "\\").heredocs[0].content == "echo $A\n"  # the shell expands it


def test_cmd_and_entrypoint() -> None:
    c = cmd('CMD ["nginx", "-g", "daemon off;"]')
    assert isinstance(c, Cmd) and c.args == ["nginx", "-g", "daemon off;"] and not c.shell_form
    e = cmd("ENTRYPOINT exec top -b")
    assert isinstance(e, Entrypoint) and e.args == ["exec top -b"] and e.shell_form
    assert cmd("CMD").args == []
    fails("CMD --x a", "unknown flag: x")


# --- ENV, LABEL, ARG -----------------------------------------------------------------------------

def test_env_pairs_and_quotes() -> None:
    env = cmd('ENV A=1 B="two words" C=\'$A\' D=$A E=a\\ b')
    assert isinstance(env, Env)
    assert env.pairs == [("A", "1"), ("B", '"two words"'), ("C", "'$A'"), ("D", "$A"), ("E", "a\\ b")]
    assert env.expanded(ENV, "\\").pairs == [("A", "1"), ("B", "two words"), ("C", "$A"), ("D", "1"),
                                               ("E", "a b")]


def test_env_legacy_form() -> None:
    env = cmd("ENV GREETING hello   big $U")
    assert env.pairs == [("GREETING", "hello   big $U")]
    assert env.expanded(ENV, "\\").pairs == [("GREETING", "hello   big app")]


def test_env_errors() -> None:
    fails("ENV A", "ENV must have two arguments")
    fails("ENV", "ENV requires at least one argument")
    fails("ENV A=1 B", 'Syntax error - can\'t find = in "B". Must be of the form: name=value')
    fails("ENV =1", "ENV names can not be blank")


def test_label_both_forms() -> None:
    assert cmd("LABEL maintainer me@x").pairs == [("maintainer", "me@x")]
    label = cmd('LABEL "com.example.vendor"="ACME" version=$A')
    assert isinstance(label, Label)
    assert label.expanded(ENV, "\\").pairs == [("com.example.vendor", "ACME"), ("version", "1")]


def test_arg() -> None:
    arg = cmd('ARG NAME VERSION=1.0 QUOTED="a b" REF=$A EMPTY=')
    assert isinstance(arg, Arg)
    assert arg.pairs == [("NAME", None), ("VERSION", "1.0"), ("QUOTED", '"a b"'), ("REF", "$A"), ("EMPTY", "")]
    assert arg.expanded(ENV, "\\").pairs == [("NAME", None), ("VERSION", "1.0"), ("QUOTED", "a b"),
                                               ("REF", "1"), ("EMPTY", "")]
    fails("ARG", "ARG requires at least one argument")
    fails("ARG =x", "ARG names can not be blank")


def test_backtick_escape_in_words() -> None:
    df = parse("# escape=`\nFROM x\nENV P=C:\\dir Q=a` b\n")
    env = command(df.instructions[1])
    assert env.pairs == [("P", "C:\\dir"), ("Q", "a` b")]
    assert env.expanded({}, "`").pairs == [("P", "C:\\dir"), ("Q", "a b")]


# --- COPY, ADD ------------------------------------------------------------------------------------

def test_copy_fields_and_expansion() -> None:
    c = cmd("COPY --from=build --chown=$U:$U --chmod=0644 --link --parents --exclude=*.md a* $DIR/b ${DIR}/")
    assert isinstance(c, Copy) and not isinstance(c, Add)
    assert (c.sources, c.dest, c.chown, c.chmod, c.from_) == (["a*", "$DIR/b"], "${DIR}/", "$U:$U", "0644", "build")
    assert (c.link, c.parents, c.exclude) == (True, True, ["*.md"])
    e = c.expanded(ENV, "\\")
    assert (e.sources, e.dest, e.chown) == (["a*", "/srv/b"], "/srv/", "app:app")


def test_copy_json_form_keeps_spaces() -> None:
    c = cmd('COPY ["my file", "dir with space/"]')
    assert (c.sources, c.dest) == (["my file"], "dir with space/")


def test_copy_link_bool_values() -> None:
    assert cmd("COPY --link=false a b").link is False
    assert cmd("COPY --link=TRUE a b").link is True
    fails("COPY --link=maybe a b", "expecting boolean value for flag link, not: maybe")
    fails("COPY --link= a b", "missing a value on flag: link")


def test_copy_heredocs() -> None:
    c = cmd("COPY <<one <<'two' /etc/\nA=$A\none\nB=$A\ntwo\n")
    assert c.sources == [] and c.dest == "/etc/"
    assert [(h.name, h.content) for h in c.heredocs] == [("one", "A=$A\n"), ("two", "B=$A\n")]
    e = c.expanded(ENV, "\\")
    assert [h.content for h in e.heredocs] == ["A=1\n", "B=$A\n"]  # quoted delimiter: no expansion
    quoted = cmd("COPY <<EOF /x\necho \"$A\" '$A'\nEOF\n").expanded(ENV, "\\")
    assert quoted.heredocs[0].content == "echo \"1\" '1'\n"  # quotes are the file's, not removed


def test_copy_errors() -> None:
    fails("COPY a", "COPY requires at least two arguments, but only one was provided. "
                    "Destination could not be determined.")
    fails("COPY --checksum=x a b", "unknown flag: checksum")
    fails("COPY --chown a b", "missing a value on flag: chown")
    fails("COPY --from=a --from=b a b", "duplicate flag specified: from")
    fails("COPY a <<EOF\nx\nEOF\n", "COPY cannot accept a heredoc as a destination")


def test_add() -> None:
    a = cmd("ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d "
            "--keep-git-dir=true --chown=1:2 https://example.com/x.tar.gz /opt/")
    assert isinstance(a, Add)
    assert a.checksum.startswith("sha256:") and a.keep_git_dir and a.chown == "1:2"
    assert (a.sources, a.dest, a.from_) == (["https://example.com/x.tar.gz"], "/opt/", None)
    fails("ADD --from=x a b", "unknown flag: from")


# --- the rest ----------------------------------------------------------------------------------------

def test_expose_volume_user_workdir_stopsignal_maintainer() -> None:
    expose = cmd("EXPOSE 80/tcp $P 53/udp")
    assert isinstance(expose, Expose) and sorted(expose.expanded(ENV, "\\").ports) == ["53/udp", "80/tcp", "8080"]
    assert cmd('VOLUME ["/data", "$DIR"]').expanded(ENV, "\\").paths == ["/data", "/srv"]
    vol = cmd("VOLUME /a $DIR")
    assert isinstance(vol, Volume) and vol.expanded(ENV, "\\").paths == ["/a", "/srv"]
    user = cmd("USER ${U}:${U}")
    assert isinstance(user, User) and user.expanded(ENV, "\\").user == "app:app"
    wd = cmd("WORKDIR $DIR/app")
    assert isinstance(wd, Workdir) and wd.expanded(ENV, "\\").path == "/srv/app"
    sig = cmd("STOPSIGNAL SIG$A")
    assert isinstance(sig, Stopsignal) and sig.expanded(ENV, "\\").signal == "SIG1"
    m = cmd("MAINTAINER Jane Doe <jane@example.com>")
    assert isinstance(m, Maintainer) and m.name == "Jane Doe <jane@example.com>"
    fails("EXPOSE", "EXPOSE requires at least one argument")
    fails("VOLUME", "VOLUME requires at least one argument")
    fails('VOLUME ["/a", " "]', "VOLUME specified can not be an empty string")
    fails("USER", "USER requires exactly one argument")
    fails("WORKDIR", "WORKDIR requires exactly one argument")


def test_expansion_error_names_the_line() -> None:
    df = parse("FROM x\nWORKDIR ${DIR:?set DIR}\n")
    with pytest.raises(DockerfileError) as caught:
        command(df.instructions[1]).expanded({}, "\\")
    assert str(caught.value) == 'Dockerfile:2: failed to process "${DIR:?set DIR}": DIR: set DIR'


def test_onbuild() -> None:
    ob = cmd("ONBUILD COPY --from=x . /app/$A")
    assert isinstance(ob, Onbuild) and ob.expression == "COPY --from=x . /app/$A"
    assert ob.expanded(ENV, "\\").expression == "COPY --from=x . /app/$A"
    ob = cmd("onbuild RUN <<EOF\necho hi\nEOF\n")
    assert ob.expression == "RUN <<EOF\necho hi\nEOF"
    fails("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    fails("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger")
    fails("ONBUILD maintainer x", "MAINTAINER isn't allowed as an ONBUILD trigger")
    fails("ONBUILD RUNN x", "unknown instruction: RUNN")
    fails("ONBUILD COPY a", "COPY requires at least two arguments, but only one was provided. "
                            "Destination could not be determined.")


def test_healthcheck() -> None:
    hc = cmd("HEALTHCHECK --interval=1m30s --timeout=10s --start-period=500ms --start-interval=2s --retries=3 "
             "CMD curl -f http://localhost/ || exit 1")
    assert isinstance(hc, Healthcheck)
    assert hc.test == ["CMD-SHELL", "curl -f http://localhost/ || exit 1"]
    assert (hc.interval, hc.timeout, hc.start_period, hc.start_interval, hc.retries) == (90.0, 10.0, 0.5, 2.0, 3)
    assert cmd('HEALTHCHECK CMD ["/bin/check", "-q"]').test == ["CMD", "/bin/check", "-q"]
    none = cmd("HEALTHCHECK none")
    assert none.test is None and none.interval is None
    fails("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments")
    fails("HEALTHCHECK --interval=5s NONE", "unknown flag: interval")
    fails("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD")
    fails("HEALTHCHECK TEST x", 'Unknown type "TEST" in HEALTHCHECK (try CMD)')
    fails("HEALTHCHECK --interval=5 CMD x", 'time: missing unit in duration "5"')
    fails("HEALTHCHECK --interval=abc CMD x", 'time: invalid duration "abc"')
    fails("HEALTHCHECK --interval=1us CMD x", 'Interval "interval" cannot be less than 1ms')
    fails("HEALTHCHECK --retries=0 CMD x", "--retries must be at least 1 (not 0)")
    fails("HEALTHCHECK --bogus=1 CMD x", "unknown flag: bogus")


@pytest.mark.parametrize("text,seconds", [
    ("0", 0.0), ("30s", 30.0), ("1m30s", 90.0), ("1.5h", 5400.0), ("300ms", 0.3), ("2h45m", 9900.0),
    ("1h2m3s4ms", 3723.004), ("10us", 1e-05),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_shell() -> None:
    sh = cmd('SHELL ["/bin/bash", "-eo", "pipefail", "-c"]')
    assert isinstance(sh, Shell) and sh.args == ["/bin/bash", "-eo", "pipefail", "-c"]
    fails("SHELL /bin/bash -c", "SHELL requires the arguments to be in JSON form")
    fails("SHELL []", "SHELL requires at least one argument")


def test_commands_without_flags_refuse_them() -> None:
    for text in ("ENV --x=1 A=1", "LABEL --x a=b", "USER --x a", "WORKDIR --x /a", "EXPOSE --x 80",
                 "VOLUME --x /a", "ARG --x A", "STOPSIGNAL --x 9", "SHELL --x [\"a\"]", "ENTRYPOINT --x a"):
        with pytest.raises(DockerfileError, match="^Dockerfile:1: unknown flag: x$"):
            cmd(text)
