"""The front door: a berthd in gateway mode (docs/gateway.md), started by
``berth serve --ray`` on the machine it runs on, and the admin calls the
controller makes to it (``PUT``/``GET /v2/gateway/replicas``).

Ray is never on the data path: clients talk to the gateway, the gateway to
the replicas over HTTP/2; the controller only tells the gateway the set.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..cli.launch import _config_fd, _to_json, find_berthd
from ..errors import BerthError
from .replica import _SPAWNER, _pdeathsig_preexec

#: The variable through which the gateway gets the admin token the
#: controller uses (generated per run unless the user set it).
TOKEN_ENV = "BERTH_RAY_GATEWAY_TOKEN"


class GatewayError(BerthError):
    """The gateway did not start or refused the controller's call."""


@dataclass(frozen=True)
class GatewayClient:
    """Admin calls to a gateway at ``url`` (http://host:port)."""

    url: str
    token: str | None  # None: a gateway without tokens (loopback only)
    timeout_s: float = 10.0

    def _call(self, method: str, body: Any = None) -> Any:
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout_s)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, "/v2/gateway/replicas", body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise GatewayError(f"{method} {self.url}/v2/gateway/replicas: {e}") from None
        finally:
            conn.close()
        if resp.status // 100 != 2:
            raise GatewayError(
                f"{method} {self.url}/v2/gateway/replicas answered {resp.status}: {raw[:300]!r}"
            )
        return json.loads(raw) if raw else None

    def put(self, replicas: Sequence[Mapping[str, str]]) -> None:
        """Replaces the gateway's replica set (new ones are probed, removed
        ones drain)."""
        self._call("PUT", {"replicas": [{"name": r["name"], "url": r["url"]} for r in replicas]})

    def get(self) -> list[dict[str, Any]]:
        doc = self._call("GET")
        if isinstance(doc, dict):
            doc = doc.get("replicas", [])
        return list(doc or [])


def admin_token(app_doc: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """One of the app's own admin tokens (the gateway then takes those), or
    None when it has none."""
    server = app_doc.get("server") or {}
    if server.get("admin_tokens_env"):
        tokens = [t.strip() for t in env.get(server["admin_tokens_env"], "").split(",")]
    elif server.get("admin_tokens_file"):
        try:
            with open(server["admin_tokens_file"], encoding="utf-8") as f:
                tokens = [line.strip() for line in f]
        except OSError as e:
            raise GatewayError(f"cannot read server.admin_tokens_file: {e}") from None
    else:
        return None
    tokens = [t for t in tokens if t and not t.startswith("#")]
    if not tokens:
        raise GatewayError("the app's admin token list is empty: the controller needs one "
                           "to tell the gateway its replicas")
    return tokens[0]


def gateway_document(
    app_doc: Mapping[str, Any], host: str, http_port: int, grpc_port: int,
    allow_remote: bool = False,
) -> dict[str, Any]:
    """The gateway's document: the app's server settings that concern the
    front door (address, tokens, TLS, limits), no models, an empty replica
    set that the controller fills, and the controller's admin token (the
    app's own admin tokens when it has some; none for an app without tokens
    whose replicas are all on loopback, see gateway_token). ``allow_remote``:
    replicas on other machines (the gateway then requires an admin token)."""
    server = dict(app_doc.get("server") or {})
    for key in ("repositories", "model_control_mode", "socket", "metrics_port"):
        server.pop(key, None)
    server.update(host=host, http_port=http_port, grpc_port=grpc_port)
    if _needs_own_token(server, allow_remote):
        server["admin_tokens_env"] = TOKEN_ENV
    doc: dict[str, Any] = {
        "server": server,
        "log": dict(app_doc.get("log") or {}),
        "gateway": {"replicas": [], "allow_remote": allow_remote},
        "models": [],
    }
    return doc


@dataclass
class GatewayProcess:
    """The gateway berthd, a child of ``berth serve --ray``."""

    doc: Mapping[str, Any]
    token: str | None
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""

    @property
    def url(self) -> str:
        server = self.doc["server"]
        host = server["host"]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{server['http_port']}"

    def start(self, timeout_s: float = 30.0) -> None:
        env = dict(os.environ)
        if self.token is not None:
            env.setdefault(TOKEN_ENV, self.token)
        fd = _config_fd(_to_json(self.doc))
        fd_log, self.log_path = tempfile.mkstemp(prefix="berth-gateway-", suffix=".log")
        try:
            # Dies with this process, even when it is killed (PR_SET_PDEATHSIG
            # from the spawner thread, as for replicas).
            self.proc = _SPAWNER.submit(
                subprocess.Popen,
                [find_berthd(os.environ), "--config-fd", str(fd)],
                stdin=subprocess.DEVNULL,
                stdout=fd_log,
                stderr=subprocess.STDOUT,
                pass_fds=(fd,),
                env=env,
                preexec_fn=_pdeathsig_preexec(),
            ).result()
        finally:
            os.close(fd)
            os.close(fd_log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise GatewayError(
                    f"the gateway exited with status {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                GatewayClient(self.url, self.token, timeout_s=2.0).get()
                return
            except GatewayError:
                time.sleep(0.1)
        raise GatewayError(f"the gateway did not answer within {timeout_s:.0f}s")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.returncode == 0:  # a clean stop: its log holds nothing to look at
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)

    def log_tail(self, limit: int = 3000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-limit:].decode(errors="replace")
        except OSError:
            return ""


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _has_tokens(server: Mapping[str, Any], kind: str) -> bool:
    return bool(server.get(f"{kind}_tokens_env") or server.get(f"{kind}_tokens_file"))


def _needs_own_token(server: Mapping[str, Any], allow_remote: bool) -> bool:
    """The gateway gets TOKEN_ENV as its admin tokens when the app has no
    admin tokens and either its replicas may be on other machines or it has
    inference tokens (tokens are then checked on every request anyway)."""
    return not _has_tokens(server, "admin") and (allow_remote or _has_tokens(server, "auth"))


def gateway_token(app_doc: Mapping[str, Any], env: Mapping[str, str],
                  allow_remote: bool) -> str | None:
    """The admin token the controller sends the gateway: the app's own, else
    BERTH_RAY_GATEWAY_TOKEN or one made for this run when the gateway needs
    one (_needs_own_token), else None: an app without tokens on loopback
    keeps a gateway without tokens, like ``berth serve`` (its replica set
    then accepts loopback addresses only, docs/gateway.md). A gateway that
    accepts replicas on other machines must check an admin token, and with
    any token configured every request needs one: an app without tokens of
    its own is refused there, since no client could call it."""
    own = admin_token(app_doc, env)
    if own is not None:
        return own
    server = app_doc.get("server") or {}
    if not _needs_own_token(server, allow_remote):
        return None
    if not _has_tokens(server, "auth") and not env.get(TOKEN_ENV):
        raise GatewayError(
            "the replicas are on other machines (this node's Ray address is not loopback), so "
            "the gateway must check an admin token before it accepts their addresses, and "
            "then every request to it needs a token: give the app tokens "
            "(--admin-tokens-env VAR and --auth-tokens-env VAR, or the *_file flags), or set "
            f"{TOKEN_ENV} to the one token the clients will send")
    return env.get(TOKEN_ENV) or new_token()
