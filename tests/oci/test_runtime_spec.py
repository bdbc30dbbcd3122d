"""config.json validation gives one clear message per mistake; the default spec is runc's."""
import json

import pytest

from sampan.oci.runtime_spec import SpecError, default_spec, load, validate


def _spec(**changes):
    spec = default_spec()
    for key, value in changes.items():
        spec[key] = value
    return spec


def test_default_spec_is_valid_and_matches_runc_shape():
    spec = default_spec()
    validate(spec)
    assert spec["process"]["args"] == ["sh"]
    assert {n["type"] for n in spec["linux"]["namespaces"]} == {"pid", "network", "ipc", "uts", "mount"}
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]


def test_rootless_spec_maps_the_caller_and_drops_cgroup_settings():
    spec = default_spec(rootless=True)
    validate(spec)
    assert {"type": "user"} in spec["linux"]["namespaces"]
    assert "network" not in {n["type"] for n in spec["linux"]["namespaces"]}
    assert spec["linux"]["uidMappings"][0]["size"] == 1
    assert "resources" not in spec["linux"]
    assert all(not o.startswith("gid=") for m in spec["mounts"] for o in m.get("options", []))


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s["process"].update(args=[]), "args must not be empty"),
    (lambda s: s["process"].update(cwd="relative"), "cwd must be an absolute path"),
    (lambda s: s.pop("root"), "root.path must be set"),
    (lambda s: s["linux"]["namespaces"].append({"type": "pid"}), "duplicated ns"),
    (lambda s: s["linux"]["namespaces"].append({"type": "bogus"}), "not supported"),
    (lambda s: s["mounts"].append({"destination": "rel"}), "not absolute"),
    (lambda s: s["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}]), "user namespaces"),
    (lambda s: s.update(hooks={"prestart": [{"path": "relative"}]}), "path must be absolute"),
    (lambda s: s.update(hooks={"bogus": []}), "unknown hook"),
])
def test_invalid_specs_are_refused_with_a_message(mutate, message):
    spec = default_spec()
    mutate(spec)
    with pytest.raises(SpecError, match=message):
        validate(spec)


def test_load_reports_missing_and_malformed_files(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(SpecError, match="parse"):
        load(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(default_spec()))
    assert load(str(tmp_path))["ociVersion"]
