"""References are normalised exactly as docker (distribution/reference) does."""
import pytest

from sampan.image.reference import Reference, familiar, is_digest, parse

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize("given, full, short", [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/busybox:x", "docker.io/library/busybox:x", "busybox:x"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("docker.io/library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("localhost:5000/a/b:tag", "localhost:5000/a/b:tag", "localhost:5000/a/b:tag"),
    ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
    ("registry.example.com/team/app", "registry.example.com/team/app:latest", "registry.example.com/team/app:latest"),
    ("[::1]:5000/app:v1", "[::1]:5000/app:v1", "[::1]:5000/app:v1"),
    (f"busybox@{D}", f"docker.io/library/busybox@{D}", f"busybox@{D}"),
    (f"a/b:t@{D}", f"docker.io/a/b:t@{D}", f"a/b:t@{D}"),
    ("a__b-c--d/e.f", "docker.io/a__b-c--d/e.f:latest", "a__b-c--d/e.f:latest"),
    ("UPPER/app", "UPPER/app:latest", "UPPER/app:latest"),  # an uppercase first part is a host
    ("Registry.Example.com/app", "Registry.Example.com/app:latest", "Registry.Example.com/app:latest"),
])
def test_normalisation(given, full, short):
    r = parse(given)
    assert str(r) == full
    assert r.familiar() == short
    assert familiar(given) == short
    assert parse(str(r)) == r  # idempotent


def test_fields_and_api_name():
    r = parse("localhost:5000/team/app:v2")
    assert (r.domain, r.path, r.tag, r.digest) == ("localhost:5000", "team/app", "v2", None)
    assert r.repository == "localhost:5000/team/app"
    assert r.name == "team/app"
    assert parse("busybox").name == "library/busybox"
    assert parse("busybox", default_tag=False).tag is None
    assert parse(f"busybox@{D}").tag is None
    assert str(parse("busybox").with_digest(D)) == f"docker.io/library/busybox@{D}"
    assert parse("busybox").with_tag("1").familiar() == "busybox:1"
    assert isinstance(r, Reference)


@pytest.mark.parametrize("bad", [
    "", "Busybox", "a_b.c/app", "busybox:", ":tag", "a//b", "a/b/", "-a", "a:b:c",
    "busybox@sha256:abc", "busybox@md5:" + "0" * 32 + "x", "a" * 256, "ab" * 32, "foo bar",
    "busybox:" + "t" * 129, "localhost:port/app", "a_/b", "/abs",
])
def test_invalid_references(bad):
    with pytest.raises(ValueError) as e:
        parse(bad)
    assert str(e.value).startswith("invalid reference format")
    assert "\n" not in str(e.value)


def test_uppercase_message_names_the_repository():
    with pytest.raises(ValueError, match=r"repository name \(library/Busybox\) must be lowercase"):
        parse("Busybox")


def test_digest_helper():
    assert is_digest(D)
    assert not is_digest("sha256:abc")
    assert not is_digest("busybox")
