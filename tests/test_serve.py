"""The render server (sim.serve): endpoints through FastAPI's TestClient, request validation, actor
edits reaching the renders, and one real ``loopdrive serve`` (uvicorn) process on loopback."""

from __future__ import annotations

import io
import json
import math
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_render_backends import RIG, build_tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, tiny_log: Path) -> Path:
    return build_tiny_bundle(tmp_path_factory, tiny_log)


@pytest.fixture(scope="module")
def client(bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    from fastapi.testclient import TestClient

    from sim.actor_library import ActorLibrary
    from sim.serve import create_app

    root = tmp_path_factory.mktemp("serve-lib")
    lib = ActorLibrary(root / "lib")
    lib.add_bundle(shutil.copytree(bundle, root / "town-b"))
    with TestClient(create_app(bundle, library=root / "lib", rig=RIG)) as c:
        yield c


@pytest.fixture(scope="module")
def ego_c2w(tiny_log: Path) -> tuple[list[list[float]], int, np.ndarray]:
    """The camera pose of the rig camera on the logged ego at frame 6, its time and the ego pose."""
    from sim.log import read_log

    dl = read_log(tiny_log)
    t = int(dl.ego.t_us[6])
    x, y, z, yaw = dl.ego.pose_at(t)
    c, s = math.cos(yaw), math.sin(yaw)
    veh = np.array([[c, -s, 0, x], [s, c, 0, y], [0, 0, 1, z], [0, 0, 0, 1]])
    return (veh @ RIG.cameras[0].vehicle_from_camera).tolist(), t, np.array([x, y, z, yaw])


def _png(resp) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(resp.content)))


def test_alive_and_actor_list(client, bundle: Path) -> None:
    r = client.get("/info")  # /alive answers the neurad protocol's plain true (tests/test_serve_neurad.py)
    assert r.status_code == 200 and r.json()["alive"] is True
    assert r.json()["cameras"][0]["name"] == "front" and r.json()["cameras"][0]["width"] == 96
    actors = client.get("/actors").json()
    ids = [a["id"] for a in json.loads((bundle / "bundle.json").read_text())["actors"]]
    assert ids and [a["id"] for a in actors] == ids
    assert all(a["pose"] is None and a["source"] == "bundle" for a in actors)


def test_camera_png_and_npz_and_lidar(client, ego_c2w) -> None:
    c2w, t, _ = ego_c2w
    rgb = _png(client.post("/render/camera", json={"pose": c2w, "t_us": t, "camera": "front"}))
    assert rgb.shape == (64, 96, 3) and rgb.dtype == np.uint8 and rgb.std() > 5
    r = client.post("/render/camera", json={"pose": c2w, "t_us": t, "camera": "front", "format": "npz"})
    z = np.load(io.BytesIO(r.content))
    assert np.array_equal(z["rgb"], rgb) and z["depth"].shape == (64, 96) and z["depth"].dtype == np.float32
    assert np.allclose(z["c2w"], np.array(c2w))
    li = client.post("/render/lidar", json={"pose": np.eye(4).tolist(), "t_us": t, "format": "json"}).json()
    assert len(li["points"]) == len(li["ray_index"]) == len(li["actor_id"]) > 100


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"pose": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}, "4x4"),
        ({"pose": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 2]]}, "last row"),
        ({"pose": [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}, "rotation"),
        ({"pose": np.eye(4).tolist(), "camera": "rear"}, "expected a camera in ['front']"),
        ({"pose": np.eye(4).tolist(), "format": "jpeg"}, "png"),
        ({"pose": np.eye(4).tolist(), "colour": 1}, "Extra inputs"),
    ],
    ids=["shape", "last-row", "not-rotation", "unknown-camera", "format", "extra-key"],
)
def test_bad_camera_requests_get_422_with_the_reason(client, body, reason) -> None:
    r = client.post("/render/camera", json=body)
    assert r.status_code == 422
    assert reason in r.text


def test_nan_pose_gets_422(client) -> None:
    pose = np.eye(4).tolist()
    pose[0][3] = float("nan")
    r = client.post("/render/camera", content=json.dumps({"pose": pose}), headers={"content-type": "application/json"})
    assert r.status_code == 422 and ("finite" in r.text or "nan" in r.text.lower())


def test_actor_edits_reach_the_render(client, ego_c2w) -> None:
    c2w, t, ego = ego_c2w
    base = _png(client.post("/render/camera", json={"pose": c2w, "t_us": t}))
    actors = client.get("/actors").json()
    car = next(a for a in actors if a["class"] == "car")
    ahead = [float(ego[0] + 10 * math.cos(ego[3])), float(ego[1] + 10 * math.sin(ego[3])), float(ego[2]), float(ego[3])]
    r = client.post("/actors", json={"update": [{"id": car["id"], "pose": ahead}]})
    assert r.status_code == 200 and next(a for a in r.json() if a["id"] == car["id"])["pose"] == ahead
    moved = _png(client.post("/render/camera", json={"pose": c2w, "t_us": t}))
    assert np.abs(moved.astype(int) - base.astype(int)).sum() > 1000
    r = client.post("/actors", json={"remove": [car["id"]]})
    assert car["id"] not in [a["id"] for a in r.json()]
    gone = _png(client.post("/render/camera", json={"pose": c2w, "t_us": t}))
    assert np.abs(gone.astype(int) - moved.astype(int)).sum() > 1000
    # insert a library actor (another source) where the car was
    r = client.post("/actors", json={"insert": [{"id": "new", "class": "car", "size": car["size"], "pose": ahead}]})
    assert r.status_code == 200, r.text
    new = next(a for a in r.json() if a["id"] == "new")
    assert new["source"].startswith("library:town-b/")
    ins = _png(client.post("/render/camera", json={"pose": c2w, "t_us": t}))
    assert np.abs(ins.astype(int) - gone.astype(int)).sum() > 1000
    # errors are all-or-nothing and name the field
    r = client.post("/actors", json={"update": [{"id": "nobody", "pose": ahead}]})
    assert r.status_code == 422 and "nobody" in r.text
    r = client.post("/actors", json={"insert": [{"id": "huge", "class": "car", "size": [12.0, 2.0, 1.5], "pose": ahead}]})
    assert r.status_code == 422 and "differs in length" in r.text
    assert "huge" not in [a["id"] for a in client.get("/actors").json()]
    r = client.post("/actors", json={"reset": True})
    assert [a["id"] for a in r.json()] == [a["id"] for a in actors]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_uvicorn_server_on_loopback(bundle: Path, tmp_path: Path) -> None:
    import httpx

    port = _free_port()
    exe = Path(sys.executable).parent / "loopdrive"
    # the server exits by itself after 3 requests; the test kills it if anything goes wrong
    p = subprocess.Popen([str(exe), "serve", str(bundle), "--port", str(port), "--library", str(tmp_path / "none"), "--max-requests", "3"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        alive = None
        while time.monotonic() < deadline and p.poll() is None:
            try:
                alive = httpx.get(f"{url}/alive", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert alive is not None and alive.status_code == 200, p.stderr.read().decode() if p.poll() is not None else "not up"
        assert alive.json() is True  # --api both (default): the neurad protocol's /alive
        assert len(httpx.get(f"{url}/actors", timeout=10).json()) > 0
        bad = httpx.post(f"{url}/render/lidar", json={"pose": [[1, 0], [0, 1]]}, timeout=10)
        assert bad.status_code == 422 and "4x4" in bad.text
        assert p.wait(timeout=60) == 0  # stopped by itself after its request budget
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


# ------------------------------------------------------------------ request limits and access
def test_openapi_schema_is_served(client) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    assert "/render/camera" in r.json()["paths"]


def test_oversized_body_is_refused_with_413_before_it_is_parsed(client) -> None:
    big = b'{"pose": [' + b"0," * 600_000 + b"0]}"
    r = client.post("/render/camera", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    # the same body without a length (chunked) is counted while it arrives
    r = client.post("/render/camera", content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.get("/alive").status_code == 200  # still serving


def test_small_bodies_pass_the_limit_unchanged(client, ego_c2w) -> None:
    c2w, t, _ = ego_c2w
    r = client.post("/render/camera", json={"pose": c2w, "t_us": t, "format": "png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def test_token_guards_every_request(bundle: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from sim.serve import create_app

    token = "s3cret-token-0123456789"
    with TestClient(create_app(bundle, library=tmp_path / "none", rig=RIG, token=token, max_body_bytes=4096)) as c:
        assert c.get("/alive").status_code == 401
        assert c.get("/alive", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        assert c.get("/alive", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        r = c.post("/actors", content=b"x" * 5000, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 413


@pytest.mark.parametrize(("host", "allow", "token", "needle"), [
    ("0.0.0.0", False, None, "--allow-remote"),
    ("0.0.0.0", False, "t" * 20, "--allow-remote"),
    ("192.0.2.1", True, None, "access token"),
    ("127.0.0.1", False, "short", "at least 16"),
])
def test_non_loopback_bind_needs_flag_and_token(host: str, allow: bool, token: str | None, needle: str) -> None:
    from sim.serve_guard import ServeConfigError, check_bind

    with pytest.raises(ServeConfigError, match=needle):
        check_bind(host, allow_remote=allow, token=token)


def test_bind_checks_accept_loopback_and_guarded_remote() -> None:
    from sim.serve_guard import check_bind

    check_bind("127.0.0.1", allow_remote=False, token=None)
    check_bind("::1", allow_remote=False, token=None)
    check_bind("0.0.0.0", allow_remote=True, token="t" * 20)


def test_cli_refuses_a_public_bind_in_one_line(bundle: Path) -> None:
    from typer.testing import CliRunner

    from sim.cli import app

    r = CliRunner().invoke(app, ["serve", str(bundle), "--host", "0.0.0.0"])
    assert r.exit_code == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "--allow-remote" in err[0]
