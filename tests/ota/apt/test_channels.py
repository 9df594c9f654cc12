"""The operators' routes of the APT room: channels, publishing, and what each refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ota.apt.conftest import Fleet, upload_deb
from tests.ota.apt.debs import build_deb
from tests.support import assert_problem, unique


@pytest.fixture
def channel(fleet: Fleet) -> str:
    """A fresh channel for all the tenant's devices."""
    name = unique("ch")
    resp = fleet.tenant.operator.post(
        "/api/v1/apt/channels", json={"name": name, "description": "Weekly data"}
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["audience"] == "all" and body["packages"] == 0
    assert body["repository"] == f"/api/v1/apt/{fleet.tenant.id}"
    return name


def test_channels_are_made_listed_read_and_deleted(fleet: Fleet, tmp_path: Path) -> None:
    operator, viewer = fleet.tenant.operator, fleet.tenant.viewer
    name = unique("site-ch")
    resp = operator.post(
        "/api/v1/apt/channels", json={"name": name, "audience": f"site:{fleet.site_a}"}
    )
    assert resp.status_code == 201, resp.text
    assert_problem(operator.post("/api/v1/apt/channels", json={"name": name}), 409, "exists")
    listing = viewer.get("/api/v1/apt/channels", params={"sort": "-created_at"})
    assert listing.status_code == 200, listing.text
    page = listing.json()
    assert set(page) == {"items", "total", "limit", "offset"}
    assert name in [c["name"] for c in page["items"]]
    assert_problem(viewer.get("/api/v1/apt/channels", params={"sort": "nope"}), 422)
    deb = upload_deb(operator, build_deb(tmp_path, "roost-chan", "1.0"))
    resp = operator.post(f"/api/v1/apt/channels/{name}/packages", json={"artifact_id": deb["id"]})
    assert resp.status_code == 201, resp.text
    published = resp.json()
    assert (published["package"], published["version"], published["architecture"]) == (
        "roost-chan",
        "1.0",
        "all",
    )
    got = viewer.get(f"/api/v1/apt/channels/{name}").json()
    assert got["audience"] == f"site:{fleet.site_a}" and got["packages"] == 1
    assert [p["artifact_id"] for p in got["items"]] == [deb["id"]]
    assert got["items"][0]["sha256"] == deb["sha256"]
    # Another tenant does not see it; a viewer may not change it.
    assert_problem(fleet.other.admin.get(f"/api/v1/apt/channels/{name}"), 404)
    assert_problem(fleet.other.admin.delete(f"/api/v1/apt/channels/{name}"), 404)
    assert_problem(viewer.delete(f"/api/v1/apt/channels/{name}"), 403)
    assert operator.delete(f"/api/v1/apt/channels/{name}").status_code == 204
    assert_problem(viewer.get(f"/api/v1/apt/channels/{name}"), 404)
    # The artifact outlives the channel, and may be deleted once published nowhere.
    assert operator.delete(f"/api/v1/artifacts/{deb['id']}").status_code == 204
    audit = operator.get(
        "/api/v1/audit", params={"entity_type": "apt_channel", "entity_id": name}
    ).json()
    assert sorted(e["action"] for e in audit["items"]) == ["create", "delete", "publish"]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"name": "Upper"}, 422, None),
        ({"name": "ok", "audience": "everyone"}, 422, "audience"),
        ({"name": "ok", "audience": "site:nowhere"}, 422, "no site"),
        ({"name": "ok", "audience": "group:nothing"}, 422, "no group"),
        ({"name": "x" * 65}, 422, None),
    ],
)
def test_a_bad_channel_is_refused(
    fleet: Fleet, body: dict[str, str], status: int, detail: str | None
) -> None:
    assert_problem(fleet.tenant.operator.post("/api/v1/apt/channels", json=body), status, detail)


def test_a_viewer_may_not_make_a_channel(fleet: Fleet) -> None:
    assert_problem(fleet.tenant.viewer.post("/api/v1/apt/channels", json={"name": "v"}), 403)


def test_publishing_refuses_what_apt_could_not_serve(
    fleet: Fleet, channel: str, tmp_path: Path
) -> None:
    operator = fleet.tenant.operator
    url = f"/api/v1/apt/channels/{channel}/packages"
    assert_problem(operator.post(url, json={"artifact_id": "no-such"}), 404, "no artifact")
    resp = operator.post(
        "/api/v1/artifacts",
        params={"type": "file", "version": "1", "filename": "notes.txt"},
        content=b"not a package",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status_code == 201, resp.text
    assert_problem(operator.post(url, json={"artifact_id": resp.json()["id"]}), 422, "type deb")
    first = upload_deb(operator, build_deb(tmp_path / "a", "roost-twice", "1.0"))
    same_version = upload_deb(operator, build_deb(tmp_path / "b", "roost-twice", "1.0"))
    assert operator.post(url, json={"artifact_id": first["id"]}).status_code == 201
    assert_problem(operator.post(url, json={"artifact_id": first["id"]}), 409, "already")
    # Another file with the same package, version and architecture: apt could not tell them apart.
    assert_problem(operator.post(url, json={"artifact_id": same_version["id"]}), 409, first["id"])
    # An artifact in a channel cannot be deleted; unpublished, it can.
    assert_problem(operator.delete(f"/api/v1/artifacts/{first['id']}"), 409, channel)
    assert_problem(fleet.tenant.viewer.delete(f"{url}/{first['id']}"), 403)
    assert operator.delete(f"{url}/{first['id']}").status_code == 204
    assert_problem(operator.delete(f"{url}/{first['id']}"), 404, "not published")
    assert operator.delete(f"/api/v1/artifacts/{first['id']}").status_code == 204
    # Another tenant cannot publish its artifacts into this tenant's channel, nor ours into its.
    assert_problem(fleet.other.admin.post(url, json={"artifact_id": same_version["id"]}), 404)


def test_a_group_channel_is_seen_by_the_group_s_members_only(fleet: Fleet) -> None:
    operator = fleet.tenant.operator
    group = unique("grp")
    resp = operator.post("/api/v1/groups", json={"id": group, "name": group})
    assert resp.status_code == 201, resp.text
    resp = operator.post(
        f"/api/v1/groups/{group}/devices", json={"device_ids": [fleet.device_a.id]}
    )
    assert resp.status_code in (200, 201), resp.text
    name = unique("grp-ch")
    resp = operator.post("/api/v1/apt/channels", json={"name": name, "audience": f"group:{group}"})
    assert resp.status_code == 201, resp.text
    url = f"/api/v1/apt/{fleet.tenant.id}/dists/{name}/InRelease"
    member = operator.as_token(fleet.device_a.token)
    outsider = operator.as_token(fleet.device_b.token)
    try:
        resp = member.get(url)
        assert resp.status_code == 200, resp.text
        assert resp.text.startswith("-----BEGIN PGP SIGNED MESSAGE-----")
        assert f"Suite: {name}\n" in resp.text
        assert_problem(outsider.get(url), 404, name)
    finally:
        member.close()
        outsider.close()
