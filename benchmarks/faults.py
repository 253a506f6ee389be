"""Fault injection, measured (issue 26's targets), one run:

* ``latency``: a 100 ms ``latency`` fault (downstream) on the echo route:
  the 64-byte round trip's p50 with the fault minus without (same sidecar,
  two routes, interleaved): the added delay, and its error against 100 ms
  (target: within 5 %);
* ``bandwidth``: a 1 MiB/s ``bandwidth`` fault (upstream) on the sink
  route: 4 MiB uploaded, the rate achieved against the setting (target:
  within 10 %);
* ``cost``: the default sidecar against one with ``[faults] enabled`` and no
  fault (its connections take the plain pump), and one with a fault that
  matches nothing (an MCP ``error`` on a method nobody calls: every HTTP
  connection of the route then takes the fault path), on the MCP call latency
  (p50, one reused connection) and MCP throughput (wrk, 50 connections),
  interleaved rounds: the ratios (target: unchanged within noise); and with
  ``[faults]`` off there is no code on the hot path at all (the default
  sidecar is that configuration).

Usage: scripts/bench faults [--rounds N] [--seconds S]
"""

from __future__ import annotations

import argparse
import statistics
import time

from compare import Upstreams, _wrk, mcp_call, prepare, roundtrips, start_sidecar, upload_seconds


def _p50_rtt_s(port: int) -> float:
    samples = roundtrips(port, 40)
    return samples[len(samples) // 2] / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    work = prepare(args, "scripts/bench faults", "mcp-sidecar-bench-faults-")
    up = Upstreams(work, args.loadgen)
    up.ports["echo-lag"] = up.ports["echo"]  # a second route to the same echo server, with the fault
    up.ports["sink-slow"] = up.ports["sink"]
    faults_on = ["[faults]", "enabled = true", ""]
    shaped = start_sidecar(
        "sidecar-shaped",
        up,
        work,
        "auto",
        False,
        extra=faults_on,
        after_route={
            "echo-lag": ["[[route.fault]]", 'kind = "latency"', 'latency = "100ms"', ""],
            "sink-slow": ["[[route.fault]]", 'kind = "bandwidth"', 'rate = "1MiB"', 'direction = "upstream"', ""],
        },
    )
    plain = start_sidecar("sidecar", up, work, "auto", False)
    unmatched = start_sidecar(
        "sidecar-faults",
        up,
        work,
        "auto",
        False,
        extra=faults_on,
        after_route={"http": ["[[route.fault]]", 'kind = "error"', 'method = "nobody/calls"', ""]},
    )
    idle = start_sidecar("sidecar-faults-none", up, work, "auto", False, extra=faults_on)
    forwarders = [shaped, plain, unmatched, idle]
    try:
        time.sleep(1.0)
        added, rates = [], []
        compared = (plain, unmatched, idle)
        calls: dict[str, list[float]] = {f.name: [] for f in compared}
        rps: dict[str, list[float]] = {f.name: [] for f in compared}
        for r in range(args.rounds):
            base = _p50_rtt_s(shaped.ports["echo"])
            added.append(_p50_rtt_s(shaped.ports["echo-lag"]) - base)
            rates.append((4 << 20) / upload_seconds(shaped.ports["sink-slow"], 4 << 20, 65536))
            for f in compared[r % 3 :] + compared[: r % 3]:
                calls[f.name].append(mcp_call(f, args)["mcp_call_p50_us"])
                rps[f.name].append(_wrk(f, args, 50, "/mcp", False, args.post_script))
            print(f"  round {r + 1} done", flush=True)
        lag = statistics.median(added)
        rate = statistics.median(rates)
        print(f"latency 100ms: added {lag * 1000:.1f} ms p50 ({(lag / 0.1 - 1) * 100:+.1f} %; target +-5 %)")
        print(f"bandwidth 1 MiB/s: {rate / (1 << 20):.3f} MiB/s ({(rate / (1 << 20) - 1) * 100:+.1f} %; target +-10 %)")
        for name, values in (("mcp-call p50 us", calls), ("MCP req/s x50", rps)):
            base = statistics.median(values["sidecar"])
            print(f"{name}: faults off {base:.0f} ({min(values['sidecar']):.0f}-{max(values['sidecar']):.0f})")
            for label, key in (
                ("enabled, no fault", "sidecar-faults-none"),
                ("enabled, an MCP fault matching nothing", "sidecar-faults"),
            ):
                v = statistics.median(values[key])
                print(f"  {label}: {v:.0f} ({min(values[key]):.0f}-{max(values[key]):.0f}), ratio {v / base:.3f}")
    finally:
        for f in forwarders:
            f.close()
        up.close()


if __name__ == "__main__":
    main()
