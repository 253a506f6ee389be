from __future__ import annotations

from mcp_sidecar.observe.quality import Quality, grade


def test_perfect_connection() -> None:
    q = Quality()
    for _ in range(20):
        q.latency(0.010, "mcp")
        q.outcome(True)
    r = q.report()
    assert (r["score"], r["grade"], r["trend"], r["anomaly"]) == (100, "A", "stable", None)
    assert r["p50_ms"] == r["p99_ms"] == 10.0 and r["cv"] == 0.0


def test_seed_penalties_add_up() -> None:
    q = Quality()
    for i in range(100):
        q.latency(1.2, "mcp")
        q.outcome(i % 10 != 0)  # 10 % errors
    r = q.report(reconnects=6)
    assert r["score"] == 100 - 30 - 40 - 25 == 5
    assert r["grade"] == "F"
    assert r["deductions"] == [
        {"points": 30, "reason": "high latency: average 1200 ms > 1000 ms"},
        {"points": 40, "reason": "high error rate: 10.0% > 5 %"},
        {"points": 25, "reason": "frequent reconnects: 6 earlier streams from this client in 10 min (> 5)"},
    ]
    assert r["issues"][:3] == [d["reason"] for d in r["deductions"]]
    q2 = Quality()
    for i in range(200):
        q2.latency(0.6, "mcp")
        q2.outcome(i % 50 != 0)  # 2 % errors
    assert q2.report()["score"] == 100 - 15 - 20 and q2.report()["grade"] == "C"
    assert [d["points"] for d in q2.report()["deductions"]] == [15, 20]
    assert q.report(reconnects=5)["deductions"][-1]["reason"].startswith("high error rate")  # 5 is not "frequent"
    assert [grade(s) for s in (95, 80, 65, 45, 10)] == ["A", "B", "C", "D", "F"]


def test_trend_and_anomaly() -> None:
    q = Quality()
    for i in range(40):
        q.latency(0.010 + 0.001 * i, "ws_ping")
    assert q.report()["trend"] == "degrading"
    q = Quality()
    for i in range(40):
        q.latency(0.050 - 0.001 * i, "ws_ping")
    assert q.report()["trend"] == "improving"
    q = Quality()
    for i in range(30):
        q.latency(0.010 + 0.0001 * (i % 3), "mcp")
    q.latency(0.5, "mcp")  # a spike
    anomaly = q.report()["anomaly"]
    assert anomaly is not None and anomaly["level"] == "critical" and anomaly["z"] > 3


def test_application_samples_replace_kernel_rtt() -> None:
    q = Quality()
    q.latency(0.0001, "tcp")
    q.latency(0.02, "mcp")
    q.latency(0.0001, "tcp")  # ignored once L7 samples exist
    r = q.report()
    assert (r["source"], r["samples"], r["avg_ms"]) == ("mcp", 1, 20.0)
