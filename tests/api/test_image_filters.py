"""`docker images --filter` as with dockerd: reference (the tags shown narrowed to the
matching ones), before/since an image, dangling, label; an unknown filter or value is a
one-line 400."""
from __future__ import annotations

import io
import json
import tarfile
import time

import pytest


def _one_file_tar(content: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("content")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


@pytest.fixture
def images(sampand):
    """Three imported images, made in this order: filt/old:1, filt/mid:1 (also filt/mid:extra
    and other/mid:1, labelled a=b), filt/new:1."""
    made = {}
    for name, extra in (("old", []), ("mid", ["-c", "LABEL a=b"]), ("new", [])):
        r = sampand.docker("import", *extra, "-", f"filt/{name}:1", input=_one_file_tar(name.encode()), check=True)
        made[name] = r.stdout.decode().strip()
        time.sleep(0.01)  # (creation times are to the nanosecond)
    sampand.docker("tag", "filt/mid:1", "filt/mid:extra", check=True)
    sampand.docker("tag", "filt/mid:1", "other/mid:1", check=True)
    yield made
    sampand.docker("rmi", "-f", *made.values())


def _shown(sampand, *filters: str) -> list[str]:
    args = [a for f in filters for a in ("--filter", f)]
    r = sampand.docker("images", *args, "--format", "{{.Repository}}:{{.Tag}}", check=True)
    return sorted(r.stdout.decode().split())


def test_reference_narrows_the_tags_shown(sampand, images):
    assert _shown(sampand, "reference=filt/mid") == ["filt/mid:1", "filt/mid:extra"]
    assert _shown(sampand, "reference=filt/*:1") == ["filt/mid:1", "filt/new:1", "filt/old:1"]
    assert _shown(sampand, "reference=*") == ["busybox:latest"]  # `*` stops at a `/`, as Go's path.Match
    (mid,) = sampand.client().get("/images/json", filters=json.dumps({"reference": ["other/*"]}))
    assert mid["Id"] == images["mid"] and mid["RepoTags"] == ["other/mid:1"]


def test_before_since_label_dangling(sampand, images):
    assert _shown(sampand, "reference=filt/*", "before=filt/mid:1") == ["filt/old:1"]
    assert _shown(sampand, "reference=filt/*", "since=filt/mid:extra") == ["filt/new:1"]
    assert _shown(sampand, "label=a=b") == ["filt/mid:1", "filt/mid:extra", "other/mid:1"]
    assert _shown(sampand, "label=a", "reference=other/*") == ["other/mid:1"]
    assert _shown(sampand, "label=a=c") == []
    assert "filt/old:1" in _shown(sampand, "dangling=false") and _shown(sampand, "dangling=true") == []


@pytest.mark.parametrize("flt,message", [
    ("foo=bar", "invalid filter 'foo'"),
    ("dangling=maybe", "invalid filter 'dangling=maybe'"),
    ("before=nosuch:1", "No such image: nosuch:1"),
])
def test_bad_filters_are_one_line_errors(sampand, flt, message):
    r = sampand.docker("images", "--filter", flt)
    assert r.returncode == 1 and r.stderr.decode().splitlines() == [f"Error response from daemon: {message}"]
