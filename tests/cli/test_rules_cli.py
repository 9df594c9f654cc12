"""``roost rules`` and ``roost alarms``, run as real subprocesses: rules applied from JSON files,
and an alarm raised by a running ``roost serve`` (a device posts an event through the HTTP door)
that the command lists, acknowledges and clears, checked through the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.alarms.conftest import alarms_of, wait_alarm
from tests.cli.test_cli import Cli, any_cli, cli  # noqa: F401  (fixtures: both backends, SQLite)
from tests.support import ADMIN_PASSWORD, SECRET_KEY, Api, RoostServer, admin_client

DOOR = {
    "id": "door",
    "name": "Door opened",
    "source": {"kind": "event", "event_type": "door_open"},
    "condition": {"type": "always"},
    "actions": [{"type": "alarm", "alarm_type": "door", "severity": "major"}],
}
CHARGE = {
    "id": "charge",
    "source": {"kind": "event", "event_type": "charge_error"},
    "condition": {"type": "expression", "expression": "msg.code >= `500`"},
    "actions": [{"type": "alarm", "severity": "critical", "summary": "{device_id} charge"}],
}


def write(path: Path, value: Any) -> str:
    path.write_text(json.dumps(value, indent=2))
    return str(path)


def test_rules_apply_list_show_enable_delete(any_cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    roost = any_cli
    both = write(tmp_path / "rules.json", [DOOR, CHARGE])
    assert roost.ok("rules", "apply", both).splitlines() == [
        "created rule door",
        "created rule charge",
    ]
    # Applying the same file again changes nothing (pending and active devices are kept).
    assert roost.ok("rules", "apply", both).splitlines() == [
        "unchanged rule door (version 1)",
        "unchanged rule charge (version 1)",
    ]
    table = roost.ok("rules", "list")
    assert "door" in table and "Door opened" in table and "event:door_open" in table
    assert "event:charge_error" in table and "yes" in table
    listed = roost.json("rules", "list")
    assert [(r["id"], r["name"], r["enabled"], r["error"]) for r in listed] == [
        ("charge", "charge", True, None),
        ("door", "Door opened", True, None),
    ]

    shown = json.loads(roost.ok("rules", "show", "door"))
    assert shown["condition"] == {"type": "always"} and shown["version"] == 1
    assert (shown["pending"], shown["active"]) == (0, 0)
    # What show prints applies back as it is (read-only fields ignored): nothing to change.
    out = roost.ok("rules", "apply", "-", stdin=json.dumps(shown).encode())
    assert out.strip() == "unchanged rule door (version 1)"

    # One object on stdin replaces the definition: a field left out goes back to its default.
    graver = {**DOOR, "actions": [{"type": "alarm", "alarm_type": "door", "severity": "critical"}]}
    del graver["name"]
    out = roost.ok("rules", "apply", "-", stdin=json.dumps(graver).encode())
    assert out.strip() == "updated rule door (version 2)"
    shown = json.loads(roost.ok("rules", "show", "door"))
    assert shown["actions"][0]["severity"] == "critical" and shown["name"] == "door"

    assert roost.ok("rules", "disable", "door").strip() == "disabled rule door (version 3)"
    assert json.loads(roost.ok("rules", "show", "door"))["enabled"] is False
    assert "no" in roost.ok("rules", "list")
    # A file without "enabled" keeps the rule's; a file that says it applies it.
    assert roost.ok("rules", "apply", both).splitlines()[0] == "updated rule door (version 4)"
    assert json.loads(roost.ok("rules", "show", "door"))["enabled"] is False
    assert roost.ok("rules", "enable", "door").strip() == "enabled rule door (version 5)"
    assert json.loads(roost.ok("rules", "show", "door"))["enabled"] is True

    assert roost.ok("rules", "delete", "charge").strip() == "deleted rule charge"
    assert [r["id"] for r in roost.json("rules", "list")] == ["door"]
    for args in (("show", "charge"), ("delete", "charge"), ("enable", "charge")):
        proc = roost("rules", *args)
        assert (proc.returncode, proc.stderr.strip()) == (1, "error: no rule 'charge'")
    proc = roost("rules", "list", "--tenant", "nowhere")
    assert (proc.returncode, proc.stderr.strip()) == (1, "error: no tenant 'nowhere'")


def test_a_bad_rule_stops_apply_with_the_field_named(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    bad = {**CHARGE, "id": "bad", "condition": {"type": "threshold", "op": "=>", "value": 1}}
    later = {**DOOR, "id": "later"}
    proc = cli("rules", "apply", write(tmp_path / "r.json", [DOOR, bad, later]))
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == ["created rule door"]
    assert proc.stderr.splitlines() == [
        "error: rule 2 (id bad) not applied: condition.op must be one of > >= < <= == !=",
        "  condition.op: must be one of > >= < <= == !=",
        "1 rule(s) after it not applied",
    ]
    assert [r["id"] for r in cli.json("rules", "list")] == ["door"]

    # Checked against the tenant as the API checks it: an unknown channel, a bad expression.
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"actions": [{"type": "alarm"}, {"type": "notify", "channels": ["nope"]}]},
            "  actions[1].channels: no notification channel 'nope'",
        ),
        (
            {"condition": {"type": "expression", "expression": "msg.code > 70"}},
            "  condition.expression: is not a valid JMESPath expression at column 12",
        ),
        ({"targets": {"groups": ["no-such-group"]}}, "no-such-group"),
        ({"colour": "red"}, "unknown fields ['colour']"),
    ]
    for change, phrase in cases:
        proc = cli("rules", "apply", "-", stdin=json.dumps({**CHARGE, **change}).encode())
        assert proc.returncode == 2, (change, proc.stderr)
        assert proc.stderr.startswith("error: rule 1 (id charge) not applied: "), proc.stderr
        assert phrase in proc.stderr, (change, proc.stderr)
    no_id = {k: v for k, v in CHARGE.items() if k != "id"}
    proc = cli("rules", "apply", "-", stdin=json.dumps(no_id).encode())
    assert proc.returncode == 2 and "error: rule 1 not applied: id: a rule applied" in proc.stderr

    # A file that is not JSON: refused whole, naming the line and column.
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"id": "x",\n   "name": }\n]\n')
    proc = cli("rules", "apply", str(broken))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: {broken} is not valid JSON: line 3, column 12: Expecting value; "
        "nothing was applied"
    )
    proc = cli("rules", "apply", "-", stdin=b"[1]")
    assert proc.returncode == 2 and "rule 1 is not a JSON object" in proc.stderr
    proc = cli("rules", "apply", str(tmp_path / "missing.json"))
    assert proc.returncode == 2 and "missing.json" in proc.stderr
    assert [r["id"] for r in cli.json("rules", "list")] == ["door"]


class ServerCli(Cli):
    """The command on the data dir of a test server, with the server's secret and password."""

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(ROOST_SECRET_KEY=SECRET_KEY, ROOST_ADMIN_PASSWORD=ADMIN_PASSWORD)
        return env


def test_alarms_list_ack_clear_on_a_real_alarm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    command = ServerCli(data)
    command.ok("device", "create", "kiosk-1", "--name", "Kiosk 1")
    token = command.ok("device", "token", "kiosk-1").strip()
    assert command.ok("rules", "apply", write(tmp_path / "door.json", DOOR)).strip() == (
        "created rule door"
    )
    assert "no alarms" in command.ok("alarms", "list")

    server = RoostServer(data, env_overrides={"ROOST_TIMER_CHECK_S": "0.2"})
    with server.running(), admin_client(server) as admin:
        with Api(server.url, token) as device:
            resp = device.post("/api/v1/events", json={"event": "door_open"})
            assert resp.status_code == 200, resp.text
        alarm = wait_alarm(admin, status="active")
        assert (alarm["device_id"], alarm["type"], alarm["rule_id"]) == ("kiosk-1", "door", "door")

        page = command.json("alarms", "list")
        assert page["total"] == 1 and page["items"][0]["id"] == alarm["id"]
        row = next(line for line in command.ok("alarms", "list").splitlines() if "kiosk-1" in line)
        for cell in (str(alarm["id"]), "major", "active", "door", "kiosk-1"):
            assert cell in row, row
        assert (
            command.json("alarms", "list", "--status", "active", "--severity", "major")["total"]
            == 1
        )
        for query in (
            ("--status", "cleared"),
            ("--severity", "critical", "--severity", "minor"),
            ("--device", "kiosk-2"),
        ):
            assert command.json("alarms", "list", *query)["total"] == 0, query
        assert len(command.json("alarms", "list", "--limit", "1")["items"]) == 1

        number = str(alarm["id"])
        assert command.ok("alarms", "ack", number).strip() == (
            f"acknowledged alarm {number}: major door on kiosk-1"
        )
        seen = admin.get(f"/api/v1/alarms/{number}").json()
        assert seen["acknowledged"] and seen["acked_by"] == "cli" and seen["status"] == "active"
        assert "cli" in command.ok("alarms", "list")  # the ack column names who
        proc = command("alarms", "ack", number)
        assert (proc.returncode, proc.stderr.strip()) == (
            1,
            f"error: alarm {number} was acknowledged by cli",
        )

        assert command.ok("alarms", "clear", number).strip() == (
            f"cleared alarm {number}: major door on kiosk-1"
        )
        seen = admin.get(f"/api/v1/alarms/{number}").json()
        assert seen["status"] == "cleared" and seen["cleared_by"] == "cli" and seen["ended_at"]
        assert alarms_of(admin, status="active") == []
        assert admin.get("/api/v1/alarms/counts").json()["active"] == 0
        audit = admin.get("/api/v1/audit", params={"entity_type": "alarm"}).json()["items"]
        assert {e["action"] for e in audit} == {"acknowledge", "clear"}
        proc = command("alarms", "clear", number)
        assert (proc.returncode, proc.stderr.strip()) == (
            1,
            f"error: alarm {number} is cleared already",
        )

    for args, status, phrase in (
        (("ack", "999999"), 1, "error: no alarm 999999"),
        (("clear", "abc"), 2, "Invalid value for 'ID'"),
        (("list", "--severity", "grave"), 2, "'grave' is not one of critical"),
        (("list", "--status", "open"), 2, "'open' is not one of"),
    ):
        proc = command("alarms", *args)
        assert proc.returncode == status and phrase in proc.stderr, (args, proc.stderr)
