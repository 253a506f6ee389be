"""``proxyctl record`` and ``proxyctl replay``: MCP conversations of every era
and transport recorded through a live worker, played again against the same
server (exit 0) and against one with a tool changed (exit 1, the diff names
the tool and the path); bad input exits 2 in one line; the files validate
against their JSON Schemas (the recording's, HAR 1.2's)."""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import trio

from mcp_sidecar.demo.drive import drive_mcp, drive_mcp_modern
from mcp_sidecar.demo.servers import serve_http, serve_ws

from ..conftest import PROXYCTL, ROOT, free_port, sdk_server_process, start_proxy, wait_until
from ..forward.test_mcp_eras import mcp_post

TOKEN = "Adm1nT0kenForTheRecordTests01"
RECORDING_SCHEMA = json.loads((ROOT / "docs" / "recording.schema.json").read_text())
HAR_SCHEMA = json.loads((ROOT / "tests" / "data" / "har-1.2.schema.json").read_text())


async def _proxyctl(*args: str, env: dict[str, str] | None = None):
    return await trio.run_process(
        [*PROXYCTL, *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "MCP_SIDECAR_ADMIN_TOKEN": TOKEN, "COLUMNS": "200", **(env or {})},
    )


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def validate_recording(path: Path) -> list[dict[str, Any]]:
    lines = lines_of(path)
    for line in lines:
        jsonschema.validate(line, RECORDING_SCHEMA)
    assert lines[0]["type"] == "header" and all(line["type"] != "header" for line in lines[1:])
    return lines


async def _demo_proxy(nursery, *, changed: bool = False):
    http_up = await nursery.start(serve_http, "127.0.0.1", 0)
    ws_up = await nursery.start(serve_ws, "127.0.0.1", 0)
    proxy = await start_proxy(
        nursery,
        {
            "admin": {"token": TOKEN},
            "route": [
                {"name": "r", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{http_up}", "health_interval": 0},
                {"name": "ws", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{ws_up}", "health_interval": 0},
            ],
        },
        admin=True,
    )
    return proxy, http_up, ws_up


async def record_while(proxy, output: Path, drive, *args: str) -> Any:
    """``proxyctl record`` running while ``drive()`` talks through the proxy;
    ends with ``--count`` (args) or when the drive is done (then a bounded wait)."""
    result: dict[str, Any] = {}

    async def run() -> None:
        result["done"] = await _proxyctl("record", "--admin", f"127.0.0.1:{proxy.admin_port}", "-o", str(output), *args)

    async with trio.open_nursery() as inner:
        inner.start_soon(run)
        await wait_until(lambda: any(rt.observation.taps for rt in proxy.proxy.routes))
        await drive()
    return result["done"]


async def record_demo(proxy, recording: Path) -> Any:
    """The demo's sessions of every transport and era, recorded (36 messages)."""

    async def drive() -> None:
        await drive_mcp("127.0.0.1", proxy.port("r"), proxy.port("ws"))
        await drive_mcp_modern("127.0.0.1", proxy.port("r"))

    return await record_while(proxy, recording, drive, "--count", "36")


def demo_urls(http_port: int, ws_port: int) -> list[str]:
    return [
        "--to",
        f"http://127.0.0.1:{http_port}/mcp",
        "--to",
        f"ws://127.0.0.1:{ws_port}/",
        "--to",
        f"http://127.0.0.1:{http_port}/sse",
    ]


async def test_demo_sessions_of_every_transport_are_recorded_and_replay_to_the_same_answers(nursery, tmp_path) -> None:
    with trio.fail_after(60):
        proxy, http_up, ws_up = await _demo_proxy(nursery)
        recording = tmp_path / "demo.jsonl"
        done = await record_demo(proxy, recording)
        assert done.returncode == 0, done.stderr.decode()
        assert done.stderr.decode().strip() == f"proxyctl record: 36 message(s) written to {recording}"
        assert recording.stat().st_mode & 0o777 == 0o600
        lines = validate_recording(recording)
        head, messages = lines[0], lines[1:]
        assert head["schema"] == "mcp-sidecar-recording" and head["version"] == 1
        assert set(head["routes"]) == {"r", "ws"} and head["routes"]["r"]["upstreams"] == [f"127.0.0.1:{http_up}"]
        assert [m["seq"] for m in messages] == list(range(1, 37))
        assert all(b["t"] >= a["t"] for a, b in itertools.pairwise(messages))
        eras = {m["era"] for m in messages}
        assert eras == {"streamable-http-2025", "streamable-http-2026", "websocket", "2024-11-05-sse"}
        first = messages[0]
        assert first["method"] == "initialize" and first["params"]["clientInfo"] == {"name": "demo"}
        answer = messages[1]
        assert answer["kind"] == "response" and answer["http"]["status"] == 200
        assert answer["http"]["headers"]["mcp-session-id"].startswith("s-")  # hashed, never the server's id
        assert "demo-" not in recording.read_text()
        modern = [m for m in messages if m["era"] == "streamable-http-2026" and m["kind"] == "request"]
        assert modern[2]["http"]["headers"] == {
            "mcp-protocol-version": "2026-07-28",
            "mcp-method": "tools/call",
            "mcp-name": "echo",
        }
        assert all(m["session"] is None and m["client"].startswith("c-") for m in modern)

        same = await _proxyctl("replay", str(recording), *demo_urls(http_up, ws_up))
        out = same.stdout.decode()
        assert same.returncode == 0, out + same.stderr.decode()
        assert "13 request(s) replayed: 13 match, 0 differ" in out
        assert "skipped #35 subscriptions/listen: a subscriptions/listen stream (long-lived) is not replayed" in out
        rows = {line.split()[0]: line.split() for line in out.splitlines()[-6:]}
        assert rows["tools/call"][1] == "5" and float(rows["tools/call"][2]) >= 100  # the slow tool, then

        changed_http = await nursery.start(
            lambda task_status: serve_http("127.0.0.1", 0, changed=True, task_status=task_status)
        )
        changed_ws = await nursery.start(
            lambda task_status: serve_ws("127.0.0.1", 0, changed=True, task_status=task_status)
        )
        differs = await _proxyctl("replay", str(recording), *demo_urls(changed_http, changed_ws), "--json")
        assert differs.returncode == 1, differs.stderr.decode()
        report = json.loads(differs.stdout)
        assert [d["target"] for d in report["differing"]] == ["echo", "echo"]  # 2025 and 2026 streamable HTTP
        assert report["differing"][0]["differences"] == [
            {"path": "$.result.content[0].text", "recorded": "hello", "now": "HELLO"}
        ]
        assert report["differing"][1]["differences"][0]["now"] == "HELLO FROM 2026"
        ignored = await _proxyctl(
            "replay", str(recording), *demo_urls(changed_http, changed_ws), "--ignore", "$.result.content[*].text"
        )
        assert ignored.returncode == 0, ignored.stdout.decode()


async def test_replay_moves_a_2025_session_to_2026_and_plays_at_the_recorded_pace(nursery, tmp_path) -> None:
    with trio.fail_after(60):
        proxy, http_up, _ = await _demo_proxy(nursery)
        recording = tmp_path / "r.jsonl"

        async def drive() -> None:
            await drive_mcp("127.0.0.1", proxy.port("r"), proxy.port("ws"))

        await record_while(proxy, recording, drive, "r", "--count", "16")  # 2025 (12), then 2024-11-05 (4)
        moved = await _proxyctl(
            "replay", str(recording), "--to", f"http://127.0.0.1:{http_up}/mcp", "--era", "2026-07-28", "--json"
        )
        report = json.loads(moved.stdout)
        assert moved.returncode == 0, moved.stdout.decode()
        assert [s["method"] for s in report["skipped"]] == ["initialize", "notifications/initialized"]
        assert report["compared"] == 3 and report["transports_without_url"] == ["legacy-sse"]
        started = trio.current_time()
        paced = await _proxyctl("replay", str(recording), "--to", f"http://127.0.0.1:{http_up}/mcp", "--speed", "1")
        assert paced.returncode == 0
        lines = lines_of(recording)
        span = lines[12]["t"] - lines[1]["t"]  # the 2025 session's first to last message
        assert trio.current_time() - started >= span


async def test_replay_refuses_bad_input_in_one_line_with_exit_2(nursery, tmp_path) -> None:
    with trio.fail_after(60):
        proxy, http_up, ws_up = await _demo_proxy(nursery)
        recording = tmp_path / "good.jsonl"
        await record_while(proxy, recording, lambda: drive_mcp_modern("127.0.0.1", proxy.port("r")), "--count", "4")
        text = recording.read_text()
        cut = tmp_path / "cut.jsonl"
        cut.write_text(text[: len(text) - 10])
        foreign = tmp_path / "foreign.jsonl"
        foreign.write_text('{"hello": "world"}\n')
        newer = tmp_path / "newer.jsonl"
        newer.write_text(text.replace('"version":1,', '"version":2,', 1))
        to = ["--to", f"http://127.0.0.1:{http_up}/mcp"]
        cases = [
            ([str(cut), *to], f"proxyctl: error: {cut}:5: not a JSON line (the file is cut short)"),
            ([str(foreign), *to], f"proxyctl: error: {foreign}:1: not an mcp-sidecar recording (no header line)"),
            (
                [str(newer), *to],
                f"proxyctl: error: {newer}:1: recording schema version 2 is newer than this proxyctl reads (1)",
            ),
            (
                [str(tmp_path / "nosuch.jsonl"), *to],
                f"proxyctl: error: {tmp_path / 'nosuch.jsonl'}: No such file or directory",
            ),
            ([str(recording), "--to", f"ws://127.0.0.1:{ws_up}/"], "nothing to replay against"),
            ([str(recording), *to, "--ignore", "result.x"], "a JSONPath starts with $"),
            (
                [str(recording), "--to", f"http://127.0.0.1:{free_port()}/mcp"],
                "nothing answers",
            ),
        ]
        for args, said in cases:
            done = await _proxyctl("replay", *args)
            err = done.stderr.decode().strip()
            assert done.returncode == 2, (args, err, done.stdout.decode())
            assert said in err and "\n" not in err and err.startswith("proxyctl: error: "), err
            assert "Traceback" not in err


async def test_the_recording_holds_no_planted_secret(nursery, tmp_path) -> None:
    secrets = {
        "api_key": "sk-live-Z9y8X7w6V5u4T3s2R1q0",
        "password": "123456789012",
        "authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.payload.signature",
    }
    with trio.fail_after(60):
        proxy, _, _ = await _demo_proxy(nursery)
        recording = tmp_path / "secrets.jsonl"

        async def drive() -> None:
            body = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "x", **secrets}},
            }
            await mcp_post(
                proxy.port("r"),
                body,
                {"mcp-session-id": "raw-session-secret-0001", "mcp-name": "file:///x?token=abcdef0123456789"},
            )

        done = await record_while(proxy, recording, drive, "--count", "2")
        assert done.returncode == 0
        text = recording.read_text()
        for value in (*secrets.values(), "raw-session-secret-0001", "abcdef0123456789"):
            assert value not in text, value
        request_line = validate_recording(recording)[1]
        assert request_line["params"]["arguments"]["api_key"] == "REDACTED"
        assert request_line["http"]["headers"]["mcp-name"] == "file:///x?token=REDACTED"


async def test_configured_recordings_rotate_and_stay_within_their_bounds(nursery, tmp_path) -> None:
    from mcp_sidecar.forward.recorder import run_recorders

    with trio.fail_after(60):
        http_up = await nursery.start(serve_http, "127.0.0.1", 0)
        directory = tmp_path / "rec"
        proxy = await start_proxy(
            nursery,
            {
                "observe": {"record": {"dir": str(directory), "max_bytes": "64KiB", "max_files": 3}},
                "route": [
                    {"name": "r", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{http_up}", "health_interval": 0},
                    {"name": "plain", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{http_up}", "protocol": "tcp"},
                ],
            },
        )
        nursery.start_soon(run_recorders, proxy.config, proxy.proxy.taps)
        await wait_until(lambda: proxy.route("r").observation.recorders != ())
        assert proxy.route("plain").observation.recorders == ()  # an unobserved route is not recorded
        for _ in range(60):
            await drive_mcp_modern("127.0.0.1", proxy.port("r"))
        await wait_until(lambda: len(list(directory.glob("r-*.jsonl"))) == 3 and _settled(directory))
        files = sorted(directory.glob("r-*.jsonl"))
        assert [f.name for f in directory.iterdir()] and all(f.name.startswith("r-") for f in directory.iterdir())
        for path in files:
            assert path.stat().st_size <= 64 * 1024
            lines = validate_recording(path)
            assert lines[0]["filter"]["route"] == "r"
        seqs = [line["seq"] for path in files for line in lines_of(path)[1:]]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # the newest files, nothing lost between them
        assert seqs[0] > 1  # the oldest file was deleted


def _settled(directory: Path) -> bool:
    """Every file ends with a whole line (the recorder writes whole lines)."""
    return all(p.read_bytes().endswith(b"\n") for p in directory.glob("*.jsonl"))


def test_a_recording_section_that_is_wrong_names_its_field() -> None:
    from mcp_sidecar.config.parse import build_config
    from mcp_sidecar.errors import ConfigError

    route = {"name": "r", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}
    for record, field in (
        ({"max_bytes": "1MiB"}, "observe.record.dir"),
        ({"dir": "/tmp/x", "max_files": 0}, "observe.record.max_files"),
        ({"dir": "/tmp/x", "routes": ["nosuch"]}, "observe.record.routes"),
        ({"dir": "/tmp/x", "max_file": 3}, "observe.record.max_file"),
    ):
        with pytest.raises(ConfigError) as caught:
            build_config({"observe": {"record": record}, "route": [route]}, source="t.toml")
        assert caught.value.field == field


async def test_a_recording_exports_as_har_that_validates(nursery, tmp_path) -> None:
    with trio.fail_after(60):
        proxy, _, _ = await _demo_proxy(nursery)
        recording = tmp_path / "demo.jsonl"
        await record_demo(proxy, recording)
        har = tmp_path / "demo.har"
        done = await _proxyctl("record", "--to-har", str(recording), "-o", str(har))
        assert done.returncode == 0, done.stderr.decode()
        document = json.loads(har.read_text())
        jsonschema.validate(document, HAR_SCHEMA)
        entries = document["log"]["entries"]
        methods = [json.loads(e["request"]["postData"]["text"]).get("method") for e in entries]
        assert methods.count("initialize") == 2 and "server/discover" in methods  # 2025, legacy, 2026
        call = next(e for e in entries if "hello from 2026" in e["request"]["postData"]["text"])
        assert call["response"]["status"] == 200 and "hello from 2026" in call["response"]["content"]["text"]
        assert {"name": "mcp-name", "value": "echo"} in call["request"]["headers"]
        assert "WebSocket" in document["log"]["comment"]
        bad = await _proxyctl("record", "--to-har", str(har), "-o", str(tmp_path / "x.har"))
        assert bad.returncode == 2 and "not an mcp-sidecar recording" in bad.stderr.decode()


async def _drive_sdk(url: str, mode: str) -> None:
    await trio.run_process(
        [sys.executable, "-m", "tests.mcp_sdk.driver", url, mode, "1"], cwd=ROOT, capture_stdout=True
    )


@pytest.mark.parametrize("mode", ["auto", "legacy", "sse"])
async def test_official_sdk_sessions_replay_against_the_sdk_server(nursery, tmp_path, mode) -> None:
    """The SDK's client in each era (2026-07-28, 2025-11-25, 2024-11-05 SSE),
    recorded through the worker; replayed against the SDK's server: the same
    answers; against its variant with echo changed: exit 1 naming echo."""
    with trio.fail_after(90):
        with sdk_server_process() as sdk, sdk_server_process(SDK_ECHO_CHANGED="1") as changed:
            proxy = await start_proxy(
                nursery,
                {
                    "admin": {"token": TOKEN},
                    "route": [
                        {"name": "r", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{sdk}", "health_interval": 0}
                    ],
                },
                admin=True,
            )
            path = "/sse" if mode == "sse" else "/mcp"
            recording = tmp_path / f"{mode}.jsonl"
            done = await record_while(
                proxy, recording, lambda: _drive_sdk(f"http://127.0.0.1:{proxy.port()}{path}", mode), "--for", "3s"
            )
            assert done.returncode == 0, done.stderr.decode()
            messages = validate_recording(recording)[1:]
            era = {"auto": "streamable-http-2026", "legacy": "streamable-http-2025", "sse": "2024-11-05-sse"}[mode]
            assert era in {m["era"] for m in messages}
            same = await _proxyctl("replay", str(recording), "--to", f"http://127.0.0.1:{sdk}{path}")
            assert same.returncode == 0, same.stdout.decode() + same.stderr.decode()
            differs = await _proxyctl("replay", str(recording), "--to", f"http://127.0.0.1:{changed}{path}", "--json")
            assert differs.returncode == 1, differs.stdout.decode() + differs.stderr.decode()
            report = json.loads(differs.stdout)
            assert {d["target"] for d in report["differing"]} == {"echo"}
            paths = {x["path"] for d in report["differing"] for x in d["differences"]}
            assert "$.result.content[0].text" in paths


async def test_a_recording_whose_directory_cannot_be_made_stops_and_says_so(nursery, tmp_path) -> None:
    """A disk that fails stops the recording (logged once), never forwarding."""
    import io

    from mcp_sidecar import logs
    from mcp_sidecar.forward.recorder import run_recorders

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    try:
        with trio.fail_after(30):
            proxy, _, _ = await _demo_proxy(nursery)
            config = build_config_with_record(proxy, blocker / "rec")
            done = trio.Event()

            async def record() -> None:
                await run_recorders(config, proxy.proxy.taps)
                done.set()

            nursery.start_soon(record)
            await wait_until(lambda: proxy.route("r").observation.recorders != ())
            got = await drive_mcp("127.0.0.1", proxy.port("r"), proxy.port("ws"))  # forwarded as ever
            assert got == {"streamable_http": 3, "websocket": 3, "http_sse": 2}
            await done.wait()  # every recorder ended at its first write
            assert proxy.route("r").observation.taps == () and proxy.route("ws").observation.taps == ()
    finally:
        logs.configure("text", "warning")
    failures = [json.loads(line) for line in out.getvalue().splitlines() if '"record.failed"' in line]
    assert sorted(f["route"] for f in failures) == ["r", "ws"]


def build_config_with_record(proxy, directory: Path):
    from dataclasses import replace

    from mcp_sidecar.config.model import RecordConfig

    return replace(proxy.config, observe=replace(proxy.config.observe, record=RecordConfig(dir=str(directory))))
