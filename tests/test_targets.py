from __future__ import annotations

import pytest

from canao.compile import check_target
from canao.errors import TargetError
from canao.targets import load_profile, parse_profile


def test_shipped_host_profile() -> None:
    p = load_profile("host-cpu")
    assert p.target["kind"] == "llvm" and p.device_type == "cpu"
    assert p.measure.repeat >= 5 and p.threads >= 1
    assert parse_profile(p.to_json(), name=p.name) == p  # round trip
    # "host" becomes the CPU LLVM detects; TVM accepts the result.
    assert '"mcpu"' in check_target(p) and "host" not in check_target(p)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"version": 1, "target": {"kind": "llvm"}, "treads": 2}', "unknown key 'treads'"),
        ('{"version": 1, "target": {"mcpu": "x"}}', "must name its 'kind'"),
        ('{"version": 1, "target": {"kind": "llvm"}, "measure": {"repeat": 0}}', "must be >= 1"),
        ('{"version": 1, "target": {"kind": "llvm"}', "not valid JSON at line 1"),
        ('{"version": 1}', "missing required key 'target'"),
    ],
)
def test_bad_profiles(text: str, needle: str) -> None:
    with pytest.raises(TargetError) as e:
        parse_profile(text, where="t.json", name="t")
    assert str(e.value).startswith("t.json:") and needle in str(e.value)


def test_target_tvm_does_not_know_is_refused() -> None:
    p = parse_profile('{"version": 1, "target": {"kind": "llvm", "bogus-option": 1}}', name="t")
    with pytest.raises(TargetError, match="TVM refuses target.*bogus-option"):
        check_target(p)
    p = parse_profile('{"version": 1, "target": {"kind": "quantum"}}', name="t")
    with pytest.raises(TargetError, match="quantum"):
        check_target(p)


def test_missing_profile_file() -> None:
    with pytest.raises(TargetError, match="no such target profile.*host-cpu"):
        load_profile("nowhere/never.json")
