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


def test_a_slow_model_is_timed_in_fewer_runs_per_repeat() -> None:
    """``max_repeat_ms`` lowers ``number`` from single runs' timings; a fast model keeps it.
    The timer is a stand-in (a model of fixed speed): the rule, not TVM, is under test."""
    from canao.measure.protocol import measure_latency
    from canao.targets import MeasureConfig

    calls: list[tuple[int, int]] = []

    def model_of(seconds: float):  # noqa: ANN202
        def timer(number: int, repeat: int, min_repeat_ms: int, warmup: int) -> list[float]:
            calls.append((number, repeat))
            return [seconds] * repeat
        return timer

    config = MeasureConfig(number=20, repeat=15, max_repeat_ms=100)
    assert measure_latency(model_of(0.030), config)["number"] == 3  # 3 x 30 ms <= 100 ms
    assert calls == [(1, 3), (3, 15)]
    assert measure_latency(model_of(0.0001), config)["number"] == 20
    assert measure_latency(model_of(0.5), config)["number"] == 1
    assert measure_latency(model_of(0.5), MeasureConfig(number=20))["number"] == 20
    with pytest.raises(ValueError, match="max_repeat_ms"):
        MeasureConfig(max_repeat_ms=-1)
