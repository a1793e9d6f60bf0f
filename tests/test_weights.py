"""Published weights by name (pose/weights.py, `posetrack weights`) against a loopback HTTP server: good files in
each naming scheme, a wrong checksum, a connection cut halfway, a server that ignores Range, no server at all.
Nothing here reaches outside the machine: every URL is rewritten to 127.0.0.1 through $POSETRACK_WEIGHTS_MIRROR,
and the tests fail if a request reaches any other host (the server is the only thing listening).
"""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import torch

from faults import unused_loopback_port
from posetrack_app.cli import main
from posetrack_app.errors import ConfigError, UserError
from posetrack_app.pose import weights
from posetrack_app.pose.checkpoint import load_checkpoint
from posetrack_app.pose.models import build_model
from posetrack_app.pose.weights import PublishedWeights, fetch, resolve
from state_dict_fixture import MODEL_FOR, SCHEMES, save_as_released

HOST = "https://download.openmmlab.com"


class LoopbackServer:
    """Serves `files` (URL path -> bytes) on 127.0.0.1 with HTTP Range support. `cut_first` responses stop after
    half of what they announce and close the connection; `ignore_range` answers every request with the whole file
    (200). Records (path, Range header) of each request."""

    def __init__(self):
        self.files = {}
        self.requests = []
        self.cut_first = 0
        self.ignore_range = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and not server.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                rest = body[start:]
                self.send_header("Content-Length", str(len(rest)))
                self.end_headers()
                if server.cut_first > 0:
                    server.cut_first -= 1
                    self.wfile.write(rest[: len(rest) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(rest)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch, tmp_path):
    srv = LoopbackServer()
    monkeypatch.setenv(weights.MIRROR_ENV, srv.url)
    monkeypatch.setenv(weights.CACHE_DIR_ENV, str(tmp_path / "cache"))
    yield srv
    srv.close()


def publish(srv: LoopbackServer, data: bytes, stem: str, *, model="hrnet_w32_256x192", keypoints="coco17",
            sha_prefix=None) -> PublishedWeights:
    """Serve `data` under an OpenMMLab-style name carrying its SHA-256 prefix (or `sha_prefix`), and its entry."""
    prefix = sha_prefix or hashlib.sha256(data).hexdigest()[:8]
    path = f"/mmpose/test/{stem}-{prefix}_20990101.pth"
    srv.files[path] = data
    return PublishedWeights(stem, model, keypoints, HOST + path, "test")


def checkpoint_bytes(tmp_path: Path, scheme: str, network: str = "hrnet_w32") -> bytes:
    return save_as_released(scheme, network, tmp_path / f"{scheme}_{network}.pth").read_bytes()


def no_leftovers(entry, tmp_path) -> bool:
    folder = tmp_path / "cache" / "weights"
    return not list(folder.glob("*" + weights.INCOMPLETE_SUFFIX))


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
@pytest.mark.parametrize("scheme", SCHEMES)
def test_good_file_of_each_naming_scheme_downloads_once_and_loads(server, tmp_path, scheme):
    data = checkpoint_bytes(tmp_path, scheme)
    entry = publish(server, data, f"good_{scheme}")
    seen = []
    path = fetch(entry, progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "cache" / "weights" / entry.file_name
    assert path.read_bytes() == data and no_leftovers(entry, tmp_path)
    assert seen[-1] == (len(data), len(data))
    with torch.device("meta"):
        model = build_model(MODEL_FOR["hrnet_w32"], 17)
    load_checkpoint(model, path, model_name=MODEL_FOR["hrnet_w32"])
    # The second use reads the cache, not the network.
    assert fetch(entry) == path and len(server.requests) == 1
    assert all(host_path.startswith("/mmpose/test/") for host_path, _ in server.requests)


def test_wrong_checksum_is_refused_and_not_kept(server, tmp_path):
    entry = publish(server, b"not the published file" * 1000, "tampered", sha_prefix="00000000")
    with pytest.raises(UserError, match="has SHA-256 .*not 00000000.*deleted, not kept"):
        fetch(entry)
    folder = tmp_path / "cache" / "weights"
    assert not (folder / entry.file_name).exists() and no_leftovers(entry, tmp_path)


def test_connection_cut_halfway_is_resumed_with_a_range_request(server, tmp_path):
    data = checkpoint_bytes(tmp_path, "mmpose_1x")
    entry = publish(server, data, "cut_once")
    server.cut_first = 1
    path = fetch(entry, backoff_s=0.0)
    assert path.read_bytes() == data and no_leftovers(entry, tmp_path)
    (_, first_range), (_, second_range) = server.requests
    assert first_range is None and second_range == f"bytes={len(data) // 2}-"


def test_download_cut_every_time_keeps_its_part_and_the_next_run_resumes(server, tmp_path):
    data = checkpoint_bytes(tmp_path, "mmpose_0x")
    entry = publish(server, data, "cut_twice")
    server.cut_first = 2
    with pytest.raises(UserError, match="was cut 2 times.*run the command again to resume"):
        fetch(entry, max_resumes=1, backoff_s=0.0)
    partial = tmp_path / "cache" / "weights" / (entry.file_name + weights.INCOMPLETE_SUFFIX)
    kept = partial.stat().st_size
    assert 0 < kept < len(data)
    assert fetch(entry, backoff_s=0.0).read_bytes() == data
    assert server.requests[-1][1] == f"bytes={kept}-" and not partial.exists()


def test_server_that_ignores_range_restarts_from_the_beginning(server, tmp_path):
    data = checkpoint_bytes(tmp_path, "official")
    entry = publish(server, data, "no_range")
    server.cut_first, server.ignore_range = 1, True
    assert fetch(entry, backoff_s=0.0).read_bytes() == data


def test_no_server_is_a_clear_error_with_the_url_and_the_manual_way(monkeypatch, tmp_path):
    port = unused_loopback_port()
    monkeypatch.setenv(weights.MIRROR_ENV, f"http://127.0.0.1:{port}")
    monkeypatch.setenv(weights.CACHE_DIR_ENV, str(tmp_path / "cache"))
    entry = weights.REGISTRY["hrnet_w48_384x288_posetrack18"]
    with pytest.raises(UserError) as info:
        fetch(entry)
    message = str(info.value)
    assert f"http://127.0.0.1:{port}/mmpose/top_down/hrnet/{entry.file_name}" in message
    assert "refused" in message.lower()
    assert f"--set pose.weights=/path/to/{entry.file_name}" in message


def test_registry_names_carry_their_checksum_and_fit_registered_models():
    from posetrack_app.pose.models import model_names
    from posetrack_app.skeleton import SKELETONS

    assert "hrnet_w48_384x288_posetrack18" in weights.REGISTRY
    for entry in weights.REGISTRY.values():
        assert len(entry.sha256_prefix) == 8 and entry.url.startswith(HOST + "/mmpose/")
        assert entry.model in model_names() and entry.keypoints in SKELETONS
    assert weights.REGISTRY["hrnet_w48_384x288_posetrack18"].sha256_prefix == "5fd6d3ff"


@pytest.mark.parametrize("value,model,keypoints,error", [
    ("hrnet_w99", "hrnet_w48_384x288", "coco17", "unknown pose weights name 'hrnet_w99'"),
    ("hrnet_w48_384x288_posetrack18", "hrnet_w48_384x288", "coco17",
     "are for pose.model=hrnet_w48_384x288 with pose.keypoints=posetrack18.*--set pose.keypoints=posetrack18"),
    ("hrnet_w32_256x192_coco", "hrnet_w48_384x288", "coco17", "--set pose.model=hrnet_w32_256x192"),
])
def test_names_that_do_not_fit_the_config_are_config_errors(value, model, keypoints, error):
    with pytest.raises(ConfigError, match=error):
        resolve(value, model=model, keypoints=keypoints)


def test_paths_are_not_taken_for_names(tmp_path):
    assert resolve(str(tmp_path / "x.pth"), model="m", keypoints="k") == tmp_path / "x.pth"


def test_cli_fetch_prints_the_path_and_refuses_a_bad_download(server, tmp_path, monkeypatch, capsys):
    data = checkpoint_bytes(tmp_path, "mmpose_1x")
    entry = publish(server, data, "cli_good")
    monkeypatch.setitem(weights.REGISTRY, entry.name, entry)
    assert main(["weights", "fetch", entry.name]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cache" / "weights" / entry.file_name)
    assert main(["weights", "list"]) == 0
    listing = capsys.readouterr().out
    assert "hrnet_w48_384x288_posetrack18" in listing and "cli_good" in listing
    # The real entry, served with other bytes: exit 2, one line, nothing kept.
    real = weights.REGISTRY["hrnet_w48_384x288_posetrack18"]
    server.files["/mmpose/top_down/hrnet/" + real.file_name] = b"x" * 1000
    assert main(["weights", "fetch", real.name]) == 2
    assert "not 5fd6d3ff" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "weights" / real.file_name).exists() and no_leftovers(real, tmp_path)


def test_pose_weights_name_in_the_config_builds_the_estimator(server, tmp_path, monkeypatch):
    """`--set pose.weights=NAME`: the pipeline factory downloads the file and builds HRNet with it (the network is
    swapped for a small one after the file is read, so the test stays fast)."""
    from posetrack_app.build import build_pose_stage
    from posetrack_app.config import load_config
    from posetrack_app.pose import checkpoint
    from posetrack_app.pose.topdown import TopDownEstimator
    from test_hrnet import tiny_hrnet

    data = checkpoint_bytes(tmp_path, "mmpose_0x")
    entry = publish(server, data, "config_name", keypoints="posetrack18")
    monkeypatch.setitem(weights.REGISTRY, entry.name, entry)
    seen = {}

    def fake_load(model_name, weights_path, num_keypoints):
        seen.update(model=model_name, data=Path(weights_path).read_bytes(), k=num_keypoints)
        return tiny_hrnet(num_keypoints).eval()

    monkeypatch.setattr(checkpoint, "load_pose_network", fake_load)
    cfg = load_config("configs/hrnet_w32_256x192.yaml", [f"pose.weights={entry.name}", "pose.keypoints=posetrack18"])
    stage = build_pose_stage(cfg)
    assert isinstance(stage, TopDownEstimator)
    assert seen == {"model": "hrnet_w32_256x192", "data": data, "k": 17}


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_posetrack18_preset_is_one_command(server, tmp_path, monkeypatch):
    """configs/hrnet_w48_384x288_posetrack18.yaml names the published PoseTrack18 W48 weights, with the model and
    layout they fit; built from the preset alone, the pose stage fetches them and runs in the PoseTrack layout. (The
    published file cannot be served here, so its registry entry points at a synthetic mmpose 0.x W48 file.)"""
    from posetrack_app.build import build_pose_stage
    from posetrack_app.config import load_config
    from posetrack_app.pose import checkpoint
    from posetrack_app.skeleton import POSETRACK18
    from test_hrnet import tiny_hrnet

    cfg = load_config("configs/hrnet_w48_384x288_posetrack18.yaml")
    published = weights.REGISTRY[cfg.pose.weights]
    assert (published.name, published.model, published.keypoints) == (
        "hrnet_w48_384x288_posetrack18", cfg.pose.model, cfg.pose.keypoints)
    data = checkpoint_bytes(tmp_path, "mmpose_0x", "hrnet_w48")
    stand_in = publish(server, data, "hrnet_w48_posetrack18_384x288", model=published.model, keypoints="posetrack18")
    monkeypatch.setitem(weights.REGISTRY, published.name,
                        PublishedWeights(published.name, published.model, published.keypoints, stand_in.url, "test"))
    loaded = {}

    def load_then_shrink(model_name, weights_path, num_keypoints):
        # The real loader checks the file against the real W48 (on the meta device: no memory), then a small
        # network stands in for the forward pass.
        with torch.device("meta"):
            load_checkpoint(build_model(model_name, num_keypoints), weights_path, model_name=model_name)
        loaded.update(model=model_name, path=Path(weights_path))
        return tiny_hrnet(num_keypoints).eval()

    monkeypatch.setattr(checkpoint, "load_pose_network", load_then_shrink)
    stage = build_pose_stage(cfg)
    assert stage.skeleton is POSETRACK18 and loaded["model"] == "hrnet_w48_384x288"
    assert loaded["path"].read_bytes() == data
