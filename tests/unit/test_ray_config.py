"""The ``ray:`` block, the replica document, the scaling policy and the
status table of ``berth serve --ray`` (docs/ray.md): pure parts, no Ray."""

from __future__ import annotations

import sys

import pytest
from berth.cli import parse_args
from berth.cli.document import build_document
from berth.errors import ConfigError
from berth.scaleout.cli import format_status, settings_from_config
from berth.scaleout.config import (
    Autoscaling,
    ScaleDecider,
    desired_replicas,
    parse_ray_block,
    parse_size,
    replica_document,
)
from berth.scaleout.replica import parse_load


def test_defaults() -> None:
    s = parse_ray_block(None)
    assert (s.address, s.namespace, s.name, s.replicas) == ("auto", "berth", "berth", 1)
    assert s.controller_name == "berth-controller-berth"
    assert s.gateway_enabled and s.autoscaling is None
    assert s.resources.actor_options() == {"num_cpus": 1.0, "num_gpus": 0.0}


def test_full_block() -> None:
    s = parse_ray_block(
        {
            "address": "127.0.0.1:6379",
            "name": "shop",
            "autoscaling": {"min_replicas": 1, "max_replicas": 4,
                            "target_ongoing_requests": 8, "upscale_delay_s": 0},
            "resources": {"num_cpus": 2, "num_gpus": 0.5, "memory": "2GiB",
                          "custom": {"node_a": 1}},
            "gateway": {"port": 9000, "grpc_port": 0, "host": "127.0.0.1"},
            "health_interval_s": 0.5,
        }
    )
    assert s.initial_replicas() == 1
    assert s.autoscaling == Autoscaling(1, 4, 8.0, 0.0, 30.0)
    assert s.resources.actor_options() == {
        "num_cpus": 2.0, "num_gpus": 0.5, "memory": 2 << 30, "resources": {"node_a": 1.0}
    }
    assert (s.gateway_port, s.gateway_grpc_port, s.gateway_host) == (9000, 0, "127.0.0.1")


@pytest.mark.parametrize(
    ("block", "words"),
    [
        ({"replica": 2}, "unknown key 'replica'"),
        ({"replicas": 0}, "ray.replicas: expected a number >= 1"),
        ({"replicas": 1.5}, "whole number"),
        ({"replicas": True}, "expected a number"),
        ({"replicas": 2, "autoscaling": {}}, "not both"),
        ({"autoscaling": {"min_replicas": 3, "max_replicas": 2}}, "min <= max"),
        ({"autoscaling": {"target_ongoing_requests": 0}}, "above 0"),
        ({"autoscaling": {"max": 2}}, "unknown key 'max'"),
        ({"resources": {"cpus": 1}}, "unknown key 'cpus'"),
        ({"resources": {"num_cpus": -1}}, "num_cpus"),
        ({"resources": {"memory": "2parsecs"}}, "unknown unit"),
        ({"resources": {"custom": {"CPU": 1}}}, "own keys"),
        ({"resources": {"custom": ["a"]}}, "mapping"),
        ({"gateway": {"port": 70000}}, "0..65535"),
        ({"gateway": {"enabled": "yes"}}, "true or false"),
        ({"name": "../x"}, "ray.name"),
        ({"address": ""}, "non-empty"),
        ({"health_interval_s": 0}, "health_interval_s"),
        ("replicas: 2", "expected a mapping"),
    ],
)
def test_bad_blocks_name_the_key(block: object, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_ray_block(block, "app.yaml")
    assert words in str(e.value) and "app.yaml" in str(e.value)


def test_sizes() -> None:
    assert parse_size("512MB", "x") == 512_000_000
    assert parse_size("1.5GiB", "x") == 3 << 29
    assert parse_size(1000, "x") == 1000
    for bad in ("0", "-1GiB", "lots", True):
        with pytest.raises(ConfigError):
            parse_size(bad, "x")


def test_replica_document_listens_where_told_and_keeps_the_rest() -> None:
    doc = {
        "server": {"host": "0.0.0.0", "http_port": 8080, "grpc_port": 8081,
                   "metrics_port": 9090, "socket": "/tmp/s", "auth_tokens_env": "T"},
        "workers": {"command": ["/driver/python", "-m", "berth.worker"]},
        "models": [{"name": "m", "runtime": "python", "path": "/models/m"}],
    }
    out = replica_document(doc, "127.0.0.1", 1234, 1235)
    assert out["server"] == {"host": "127.0.0.1", "http_port": 1234, "grpc_port": 1235,
                             "auth_tokens_env": "T"}
    assert out["workers"]["command"] == [sys.executable, "-m", "berth.worker"]
    assert out["models"] == doc["models"]
    assert doc["server"]["host"] == "0.0.0.0"  # the input is not changed
    custom = replica_document({"workers": {"command": ["/opt/w"]}}, "::1", 1, 2)
    assert custom["workers"]["command"] == ["/opt/w"]


def test_desired_replicas_follows_ongoing_requests() -> None:
    a = Autoscaling(min_replicas=1, max_replicas=4, target_ongoing_requests=2)
    assert [desired_replicas(a, x) for x in (0, 1, 2, 3, 8, 100)] == [1, 1, 1, 2, 4, 4]
    zero = Autoscaling(min_replicas=0, max_replicas=3, target_ongoing_requests=5)
    assert desired_replicas(zero, 0) == 0 and desired_replicas(zero, 0.5) == 1


def test_decider_waits_out_the_delays() -> None:
    d = ScaleDecider(Autoscaling(1, 4, 2.0, upscale_delay_s=5, downscale_delay_s=30))
    assert d.decide(8, 1, now=0) == 1  # wants 4: waits
    assert d.decide(8, 1, now=4.9) == 1
    assert d.decide(8, 1, now=5.0) == 4
    assert d.decide(0, 4, now=6) == 4  # wants fewer: waits 30 s
    assert d.decide(6, 4, now=10) == 4  # still fewer (3): the same wait goes on
    assert d.decide(0, 4, now=35.9) == 4
    assert d.decide(0, 4, now=36) == 1
    assert d.decide(8, 1, now=41) == 1  # an up wait starts from zero
    assert d.decide(2, 1, now=42) == 1  # agreeing with the count ends it
    assert d.decide(8, 1, now=46.5) == 1
    assert d.decide(8, 1, now=51.5) == 4


def test_parse_load_sums_models() -> None:
    text = (
        "# TYPE berth_inflight_requests gauge\n"
        'berth_inflight_requests{model="a",version="1"} 3\n'
        'berth_inflight_requests{model="b",version="1"} 2\n'
        'berth_queue_depth{model="a",version="1"} 1\n'
        'berth_requests_total{model="a",version="1",protocol="rest",outcome="success"} 10\n'
        'berth_requests_total{model="b",version="1",protocol="grpc",outcome="overload"} 4\n'
        'berth_request_duration_seconds_count{model="a",version="1"} 99\n'
        "garbage line\n"
    )
    assert parse_load(text) == {"in_flight": 5.0, "queued": 1.0, "requests": 14.0}


def test_status_table() -> None:
    status = {
        "app": "shop", "namespace": "berth", "generation": 2, "target_replicas": 2,
        "autoscaling": False, "gateway": "http://127.0.0.1:8080",
        "replicas": [
            {"name": "shop-2-3", "state": "ready", "generation": 2, "node_id": "n1",
             "url": "http://127.0.0.1:4000", "in_flight": 3, "queued": 1, "requests": 50,
             "ready": True},
            {"name": "shop-2-4", "state": "starting", "generation": 2},
        ],
        "nodes": [{"node_id": "n1", "address": "127.0.0.1", "alive": True},
                  {"node_id": "n2", "address": "127.0.0.1", "alive": True}],
    }
    text = format_status(status)
    lines = text.splitlines()
    assert lines[0] == ("app shop (namespace berth): version 2, 2 replica(s) wanted, "
                        "gateway http://127.0.0.1:8080")
    assert "node n1 127.0.0.1 alive: 1 replica(s)" in lines
    assert "node n2 127.0.0.1 alive: 0 replica(s)" in lines
    assert "node (not placed yet): 1 replica(s)" in lines
    row = next(line for line in lines if "shop-2-3" in line)
    assert "in_flight=3 queued=1 requests=50" in row and row.endswith("healthy")


def test_ray_block_is_not_handed_to_the_engine(tmp_path) -> None:
    model = tmp_path / "m.py"
    model.write_text("import berth\nclass M(berth.Model):\n    def predict(self, x): return x\n")
    config = tmp_path / "berth.yaml"
    config.write_text("ray:\n  replicas: 3\n  name: shop\nserver:\n  http_port: 9000\n")
    doc = build_document(f"{model}:M", {"config": str(config)})
    assert "ray" not in doc and doc["server"]["http_port"] == 9000
    assert settings_from_config(str(config)).replicas == 3
    assert settings_from_config(None).name == "berth"


def test_cli_flags() -> None:
    ns = parse_args(["serve", "m.joblib", "--ray"])
    assert ns.ray == ""
    ns = parse_args(["serve", "m.joblib", "--ray", "10.0.0.1:6379"])
    assert ns.ray == "10.0.0.1:6379"
    assert parse_args(["serve", "m.joblib"]).ray is None
    ns = parse_args(["ray", "update", "m.joblib", "--wait", "--ray", "auto", "--app", "shop"])
    assert (ns.ray_command, ns.wait, ns.app) == ("update", True, "shop")
    ns = parse_args(["status", "--json", "--namespace", "prod"])
    assert ns.json and ns.namespace == "prod"
    with pytest.raises(SystemExit):
        parse_args(["ray", "scale"])  # --replicas is required


def test_log_errors_keeps_the_messages_not_the_tracebacks() -> None:
    from berth.scaleout.replica import log_errors

    log = "\n".join([
        '{"level":"info","msg":"loading model"}',
        '{"level":"error","msg":"loading m.py failed","exc":"Traceback (most recent call last)"}',
        '{"level":"error","msg":"model failed to load","error":"RuntimeError: no w.bin"}',
        '{"level":"error","msg":"model failed to load","error":"RuntimeError: no w.bin"}',
        "not json",
    ])
    assert log_errors(log) == "loading m.py failed; model failed to load (RuntimeError: no w.bin)"
    assert "Traceback" not in log_errors(log)
    assert log_errors("berthd: cannot bind 127.0.0.1:80\n") == "berthd: cannot bind 127.0.0.1:80"


def test_gateway_document_and_its_admin_token(tmp_path) -> None:
    from berth.scaleout.gateway import (
        TOKEN_ENV,
        GatewayError,
        admin_token,
        gateway_document,
        gateway_token,
    )

    app = {
        "server": {"host": "0.0.0.0", "http_port": 8080, "repositories": ["/m"],
                   "model_control_mode": "explicit", "auth_tokens_env": "TOKENS",
                   "max_body_bytes": 1000},
        "log": {"level": "debug"},
        "models": [{"name": "m"}],
    }
    doc = gateway_document(app, "127.0.0.1", 9000, 9001)
    assert doc["models"] == [] and doc["gateway"] == {"replicas": [], "allow_remote": False}
    assert doc["server"] == {"host": "127.0.0.1", "http_port": 9000, "grpc_port": 9001,
                             "auth_tokens_env": "TOKENS", "max_body_bytes": 1000,
                             "admin_tokens_env": TOKEN_ENV}
    # an app without any token, all on loopback: a gateway without tokens too
    bare = {"server": {"host": "127.0.0.1"}, "models": []}
    assert "admin_tokens_env" not in gateway_document(bare, "127.0.0.1", 1, 2)["server"]
    assert gateway_token(bare, {}, allow_remote=False) is None
    # ... but replicas beyond loopback need a token the clients know
    assert gateway_document(bare, "127.0.0.1", 1, 2, True)["server"]["admin_tokens_env"] == TOKEN_ENV
    with pytest.raises(GatewayError, match="--admin-tokens-env"):
        gateway_token(bare, {}, allow_remote=True)
    assert gateway_token(bare, {TOKEN_ENV: "t0"}, allow_remote=True) == "t0"
    # inference tokens of its own: the gateway gets an admin token made for the run
    made = gateway_token(app, {}, allow_remote=False)
    assert made and made == gateway_token(app, {TOKEN_ENV: made}, allow_remote=True)
    assert doc["log"] == {"level": "debug"}
    assert admin_token(app, {}) is None
    assert gateway_document(app, "127.0.0.1", 1, 2, allow_remote=True)["gateway"]["allow_remote"]

    own = {"server": {"admin_tokens_env": "ADMIN"}}
    assert admin_token(own, {"ADMIN": " a1 , a2"}) == "a1"
    assert gateway_document(own, "127.0.0.1", 1, 2)["server"]["admin_tokens_env"] == "ADMIN"
    tokens = tmp_path / "admin.txt"
    tokens.write_text("# admins\n\nf1\nf2\n")
    assert admin_token({"server": {"admin_tokens_file": str(tokens)}}, {}) == "f1"
    with pytest.raises(GatewayError, match="empty"):
        admin_token(own, {"ADMIN": ""})
    with pytest.raises(GatewayError, match="admin_tokens_file"):
        admin_token({"server": {"admin_tokens_file": str(tmp_path / "none")}}, {})
