"""The CPU probe the report times before each replay (eval/probe.py)."""
from eval.probe import describe, drift, speed_probe
from eval.report import _drift_note


def test_the_probe_times_its_three_parts():
    probe = speed_probe(repeats=1)
    assert set(probe) == {"compute_ms", "memory_ms", "two_cores_ms"}
    assert all(v > 0 for v in probe.values())


def test_drift_is_the_largest_spread_of_any_part():
    probes = {"full pipeline": {"compute_ms": 20.0, "memory_ms": 10.0, "two_cores_ms": 21.0},
              "without x": {"compute_ms": 21.0, "memory_ms": 13.0, "two_cores_ms": 22.0},
              "end": {"compute_ms": 22.0, "memory_ms": 11.0, "two_cores_ms": 23.0}}
    assert abs(drift(probes) - 0.30) < 1e-9  # memory: 13 / 10
    assert drift({"full pipeline": probes["end"]}) is None


def test_the_report_warns_when_the_machine_changed_speed_during_the_run():
    assert "held within 14%" in _drift_note(0.14)
    note = _drift_note(0.25)
    assert "changed by up to 25%" in note and "not the switch's" in note
    assert _drift_note(None) == ""
    assert describe({"compute_ms": 24.75, "memory_ms": 19.5,
                     "two_cores_ms": 26.0}) == "24.8 / 19.5 / 26.0"
    assert describe(None) == "—"
