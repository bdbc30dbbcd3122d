"""The builder on a real engine (busybox in its own store, networks in the test's own
namespace): image config and history as Docker's legacy builder writes them, the cache
(hits with no container or mount, what misses it, kept across restarts, pruned), RUN
failures leaving nothing behind, multi-stage builds (only what the target needs, independent
stages in parallel, COPY --from), ONBUILD triggers."""
from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path

import pytest

from sampan.build.builder import Builder, BuildError, BuildOptions
from sampan.build.cache import BuildCache
from sampan.build.context import BuildContext, ContextError
from sampan.build.dockerfile import DockerfileError
from sampan.engine.buildsteps import EngineStepRunner
from sampan.image.commit import EMPTY_LAYER
from sampan.image.snapshots import mountpoints


def _engine_conftest():
    path = Path(__file__).resolve().parents[1] / "engine" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_engine_conftest_for_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_engine = _engine_conftest()
roots, engine_netns, engine, run = _engine.roots, _engine.engine_netns, _engine.engine, _engine.run


@pytest.fixture
def builder(engine):
    cache = BuildCache(engine.root)
    yield Builder(engine.images, EngineStepRunner(engine), cache)
    cache.close()


def _build(builder, ctx_dir, dockerfile: str, **options):
    """Build; returns (image ID, the stream's text, the messages)."""
    Path(ctx_dir, "Dockerfile").write_text(dockerfile)
    messages: list[dict] = []
    options.setdefault("network", "none")
    image_id = builder.build(BuildContext.from_dir(str(ctx_dir)), BuildOptions(**options), messages.append)
    return image_id, "".join(m.get("stream", "") for m in messages), messages


def _history(engine, image_id) -> list[tuple[str, bool]]:
    return [(h.get("created_by", ""), bool(h.get("empty_layer"))) for h in engine.images.get(image_id).config["history"]]


def _nothing_left(engine) -> None:
    assert engine.store.all() == []
    assert engine.images.snapshots.keys() == []
    assert os.listdir(os.path.join(engine.root, "containers")) == []
    assert not [m for m in mountpoints() if m.startswith(engine.root)]


DOCKERFILE = """FROM busybox
ARG V=1
ENV A=b C=d
LABEL x=y "z w"=q
WORKDIR /app
COPY a.txt /app/
COPY dir /d/
RUN echo hi $V > f && echo out && echo err >&2
RUN true
EXPOSE 80 443/udp
USER nobody
VOLUME /data
SHELL ["/bin/sh", "-xc"]
ENTRYPOINT echo ep
CMD ["a", "b"]
MAINTAINER me
"""


def test_config_history_and_cache_as_the_legacy_builder(builder, engine, run, tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "b.txt").write_text("b\n")
    base = engine.images.resolve("busybox")
    image_id, out, messages = _build(builder, tmp_path, DOCKERFILE, tags=["built:1", "built:2"],
                                     build_args={"V": "2"})
    img = engine.images.get(image_id)
    cfg = img.config["config"]
    assert cfg["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=b", "C=d"]
    assert cfg["Labels"] == {"x": "y", "z w": "q"}
    assert cfg["WorkingDir"] == "/app" and cfg["User"] == "nobody"
    assert cfg["ExposedPorts"] == {"443/udp": {}, "80/tcp": {}} and cfg["Volumes"] == {"/data": {}}
    assert cfg["Entrypoint"] == ["/bin/sh", "-xc", "echo ep"] and cfg["Cmd"] == ["a", "b"]
    assert cfg["Shell"] == ["/bin/sh", "-xc"]
    assert img.config["author"] == "me" and img.parent
    history = _history(engine, image_id)[len(base.config.get("history") or []):]
    assert history[:4] == [("/bin/sh -c #(nop)  ARG V=1", True), ("/bin/sh -c #(nop)  ENV A=b C=d", True),
                           ("/bin/sh -c #(nop)  LABEL x=y z w=q", True), ("/bin/sh -c #(nop) WORKDIR /app", False)]
    assert history[4][0].startswith("/bin/sh -c #(nop) COPY file:") and history[4][0].endswith(" in /app/ ")
    assert history[5][0].startswith("/bin/sh -c #(nop) COPY dir:") and history[5][0].endswith(" in /d/ ")
    assert history[6:] == [
        ("|1 V=2 /bin/sh -c echo hi $V > f && echo out && echo err >&2", False),
        ("|1 V=2 /bin/sh -c true", True),   # (a RUN that changes nothing has no layer, as in Docker)
        ("/bin/sh -c #(nop)  EXPOSE 443/udp 80", True), ("/bin/sh -c #(nop)  USER nobody", True),
        ("/bin/sh -c #(nop)  VOLUME [/data]", True), ("/bin/sh -xc #(nop)  SHELL [/bin/sh -xc]", True),
        ('/bin/sh -xc #(nop)  ENTRYPOINT ["/bin/sh" "-xc" "echo ep"]', True),
        ('/bin/sh -xc #(nop)  CMD ["a" "b"]', True), ("/bin/sh -xc #(nop)  MAINTAINER me", True)]
    assert len(img.layers) == len(base.layers) + 4 and EMPTY_LAYER not in img.diff_ids
    assert "Step 1/16 : FROM busybox\n" in out and "Step 8/16 : RUN echo hi $V > f" in out
    assert " ---> Running in " in out and "\x1b[91merr\n\x1b[0m" in out and "out\n" in out
    assert {"aux": {"ID": image_id}} in messages
    assert out.endswith(f"Successfully built {image_id[7:19]}\nSuccessfully tagged built:1\n"
                        "Successfully tagged built:2\n")
    assert engine.images.resolve("built:2").id == image_id
    code, data, _ = run(["cat", "/app/f", "/app/a.txt", "/d/b.txt"], Image=image_id, Entrypoint=[""], User="")
    assert (code, data) == (0, b"hi 2\nhello\nb\n")
    for rec in engine.store.all():
        engine.remove(rec["id"], force=True)
    _nothing_left(engine)

    # the same build again: every step from the cache, no container, no mount, fast
    started = time.monotonic()
    again, out, _ = _build(builder, tmp_path, DOCKERFILE, build_args={"V": "2"})
    elapsed = time.monotonic() - started
    assert again == image_id and out.count(" ---> Using cache\n") == 15 and "Running in" not in out
    assert elapsed < 0.3, f"a fully cached rebuild took {elapsed:.3f} s"
    # a new mtime keeps the cache; another byte in a.txt misses it from that COPY on
    os.utime(tmp_path / "a.txt", (1, 1))
    assert _build(builder, tmp_path, DOCKERFILE, build_args={"V": "2"})[0] == image_id
    (tmp_path / "a.txt").write_text("hello!\n")
    changed, out, _ = _build(builder, tmp_path, DOCKERFILE, build_args={"V": "2"})
    assert changed != image_id and out.count(" ---> Using cache\n") == 4
    # another build arg value misses from the first RUN that sees it
    (tmp_path / "a.txt").write_text("hello\n")
    other, out, _ = _build(builder, tmp_path, DOCKERFILE, build_args={"V": "3"})
    assert other != image_id and out.count(" ---> Using cache\n") == 6
    _, out, _ = _build(builder, tmp_path, DOCKERFILE, build_args={"V": "2"}, no_cache=True)
    assert "Using cache" not in out
    _nothing_left(engine)


def test_the_cache_survives_a_restart_and_is_pruned(builder, engine, tmp_path):
    dockerfile = "FROM busybox\nRUN echo one > /one\nENV X=1\n"
    first, _, _ = _build(builder, tmp_path, dockerfile)
    reopened = BuildCache(engine.root)
    try:
        again, out, _ = _build(Builder(engine.images, EngineStepRunner(engine), reopened), tmp_path, dockerfile)
        assert again == first and out.count("Using cache") == 2
        keys, freed = reopened.prune(engine.images)
        assert len(keys) == 2 and freed > 0
        assert not engine.images.exists(first)   # the untagged step images went with their entries
        assert reopened.entries() == []
    finally:
        reopened.close()
    _, out, _ = _build(builder, tmp_path, dockerfile, tags=["kept"])
    assert "Using cache" not in out
    builder.cache.prune(engine.images)
    assert engine.images.exists("kept")   # a tagged image stays


def test_a_failing_run_fails_the_build_and_leaves_nothing(builder, engine, tmp_path):
    with pytest.raises(BuildError) as err:
        _build(builder, tmp_path, "FROM busybox\nRUN echo x\nRUN exit 3\nRUN echo never\n")
    assert str(err.value) == "The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    assert err.value.code == 3
    _nothing_left(engine)
    with pytest.raises(ContextError, match="^COPY failed: file not found in build context"):
        _build(builder, tmp_path, "FROM busybox\nCOPY nothere /x\n")
    _nothing_left(engine)


def test_a_malformed_dockerfile_names_the_line(builder, engine, tmp_path):
    with pytest.raises(DockerfileError) as err:
        _build(builder, tmp_path, "FROM busybox\nRUNN x\n")
    assert "2" in str(err.value) and "unknown instruction: RUNN" in str(err.value)
    _nothing_left(engine)


MULTISTAGE = """FROM busybox AS a
RUN sleep 1 && echo from-a > /a
FROM busybox AS unused
RUN false
FROM busybox AS b
RUN sleep 1 && echo from-b > /b
FROM busybox
COPY --from=a /a /got/
COPY --from=2 /b /got/
"""


def test_stages_build_in_parallel_only_as_the_target_needs(builder, engine, run, tmp_path):
    since = time.time()
    image_id, out, _ = _build(builder, tmp_path, MULTISTAGE)
    assert "RUN false" not in out   # the unused stage is not built (nor counted)
    assert out.index("Step 1/7 : FROM busybox AS a") < out.index("Step 3/7 : FROM busybox AS b") < \
        out.index("Step 5/7 : FROM busybox\n") < out.index("Step 7/7 : COPY --from=2 /b /got/")
    # both RUN containers ran at the same time: each started before the other died
    events = [e for e in engine.events_stream(since=since, until=time.time())
              if e["Type"] == "container" and e["Action"] in ("start", "die")]
    starts = [e["timeNano"] for e in events if e["Action"] == "start"]
    dies = [e["timeNano"] for e in events if e["Action"] == "die"]
    assert len(starts) == 2 and len(dies) == 2 and max(starts) < min(dies)
    code, data, _ = run(["cat", "/got/a", "/got/b"], Image=image_id)
    assert (code, data) == (0, b"from-a\nfrom-b\n")
    with pytest.raises(BuildError, match="returned a non-zero code: 1"):
        _build(builder, tmp_path, MULTISTAGE, target="unused")


def test_onbuild_triggers_run_at_from(builder, engine, run, tmp_path):
    parent, _, _ = _build(builder, tmp_path, "FROM busybox\nONBUILD RUN echo triggered > /t\n", tags=["onb"])
    assert engine.images.get(parent).config["config"]["OnBuild"] == ["RUN echo triggered > /t"]
    child, out, _ = _build(builder, tmp_path, "FROM onb\nENV Y=1\n")
    assert "# Executing 1 build trigger\n" in out
    assert engine.images.get(child).config["config"]["OnBuild"] is None
    assert run(["cat", "/t"], Image=child)[:2] == (0, b"triggered\n")


def test_cache_from_an_image_without_cache_entries(builder, engine, tmp_path):
    dockerfile = "FROM busybox\nENV A=1\nRUN echo layer > /l\nCMD [\"sh\"]\n"
    first, _, _ = _build(builder, tmp_path, dockerfile, tags=["source:1"])
    builder.cache.prune(engine.images)   # (the entries go; the tagged image and its parents stay)
    again, out, _ = _build(builder, tmp_path, dockerfile, cache_from=["source:1", "not-here:1"])
    assert out.count(" ---> Using cache\n") == 3 and again == first
    _, out, _ = _build(builder, tmp_path, dockerfile + "ENV B=2\n", cache_from=["source:1"])
    assert out.count(" ---> Using cache\n") == 3   # (and the new step after them is built)


def test_labels_option_and_unused_build_args(builder, engine, tmp_path):
    image_id, out, _ = _build(builder, tmp_path, "FROM busybox\nARG USED\nRUN echo $USED\n",
                              labels={"b": "2", "a": "1 one"}, build_args={"USED": "x", "UNUSED": "y",
                                                                            "HTTP_PROXY": "http://p:1"})
    assert "Step 4/5 : LABEL a=1 one\n" in out and "Step 5/5 : LABEL b=2\n" in out
    assert engine.images.get(image_id).config["config"]["Labels"] == {"a": "1 one", "b": "2"}
    assert "[Warning] One or more build-args [UNUSED] were not consumed\n" in out
    # the predefined proxy arg reaches RUN but not the history, unless declared
    assert ("|1 USED=x /bin/sh -c echo $USED", True) in _history(engine, image_id)


def test_quiet_streams_the_id_alone_or_everything_on_a_failure(builder, tmp_path):
    image_id, out, messages = _build(builder, tmp_path, "FROM busybox\nRUN echo hidden\n", quiet=True)
    assert messages == [{"aux": {"ID": image_id}}, {"stream": image_id + "\n"}]
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo shown; exit 2\n")
    messages = []
    with pytest.raises(BuildError):
        builder.build(BuildContext.from_dir(str(tmp_path)), BuildOptions(quiet=True, network="none"), messages.append)
    assert "shown\n" in "".join(m.get("stream", "") for m in messages)


def test_a_cancelled_build_kills_its_step_and_leaves_nothing(builder, engine, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo started; sleep 60\n")
    options = BuildOptions(network="none")
    started = threading.Event()
    failure: list[BaseException] = []

    def emit(msg: dict) -> None:
        if msg.get("stream") == "started\n":
            started.set()

    def build() -> None:
        try:
            builder.build(BuildContext.from_dir(str(tmp_path)), options, emit)
        except BaseException as e:  # noqa: BLE001 - checked below
            failure.append(e)

    thread = threading.Thread(target=build)
    thread.start()
    assert started.wait(30)
    begun = time.monotonic()
    options.cancel.set()
    thread.join(30)
    assert not thread.is_alive() and time.monotonic() - begun < 5
    assert isinstance(failure[0], BuildError) and "returned a non-zero code: 137" in str(failure[0])
    _nothing_left(engine)


def test_step_containers_a_killed_daemon_left_are_swept(engine):
    runner = EngineStepRunner(engine)
    left = runner.create(engine.images.resolve("busybox").id, {"Cmd": ["true"]})
    other = engine.create({"Image": "busybox", "Cmd": ["true"]})
    EngineStepRunner(engine).sweep()
    assert [r["id"] for r in engine.store.all()] == [other] and left.id != other
