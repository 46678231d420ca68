"""Podium stand-in: deployments, instances, transcripts, workspace files and runtime sockets."""

import base64
import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from loguru import logger
from sanic import HTTPResponse, Request, Websocket, empty, json
from sanic.exceptions import BadRequest, WebsocketClosed
from websockets.exceptions import ConnectionClosed

from diminuendo.local.agents import AGENTS
from diminuendo.local.podium_store import PodiumStore, UnknownCursor
from diminuendo.local.runtime import AgentServices, InstanceRuntime
from diminuendo.local.service import (
    LocalService,
    StoreBackedStandIn,
    error_response,
    json_object,
)
from diminuendo.upstreams.sealing import SealError, SealingKey, instance_aad, open_sealed

VERSIONS = ("1.0.0", "0.9.0")  # newest first, so the gateway's "newest deployment" is 1.0.0
MAX_MESSAGES_PAGE = 500
MAX_LIST_DEPTH = 64


def deployment_id(agent_type: str, version: str) -> str:
    """`{agent_type}:{version}@{hash8}`, hash8 being the sha256 of `{agent_type}:{version}`."""
    digest = hashlib.sha256(f"{agent_type}:{version}".encode()).hexdigest()[:8]
    return f"{agent_type}:{version}@{digest}"


DEPLOYMENTS = [
    {
        "deployment_id": deployment_id(agent_type, version),
        "agent_type": agent_type,
        "version": version,
    }
    for agent_type in AGENTS
    for version in VERSIONS
]
_DEPLOYMENTS_BY_ID = {deployment["deployment_id"]: deployment for deployment in DEPLOYMENTS}


def _int_arg(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    problem = f"{name} must be an integer between {low} and {high}"
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(problem) from None
    if not low <= value <= high:
        raise BadRequest(problem)
    return value


def _object_field(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be an object")
    return value


def _sealed_secrets(body: dict[str, Any]) -> str | None:
    """`secrets` as the gateway sends it, `{"sealed": "v1.…"}` (docs/DECISIONS.md), or None for
    an instance without secrets; a plaintext map is refused rather than kept."""
    secrets = _object_field(body, "secrets")
    if not secrets:
        return None
    sealed = secrets.get("sealed")
    if set(secrets) != {"sealed"} or not isinstance(sealed, str):
        raise BadRequest('secrets must be {"sealed": "v1.…"}, sealed with PODIUM_SECRETS_KEY')
    return sealed


def _aad(metadata: dict[str, Any]) -> bytes:
    return instance_aad(str(metadata.get("tenant_id", "")), str(metadata.get("session_id", "")))


def _instance_not_found() -> HTTPResponse:
    return error_response(404, "NOT_FOUND", "no such instance")


class PodiumStandIn(StoreBackedStandIn[PodiumStore]):
    """Serves UPSTREAMS.md §1; each instance runs its agent in-process (see runtime.py)."""

    def __init__(
        self, db_path: Path, api_key: str, ensemble_url: str, *, secrets_key: SealingKey
    ) -> None:
        super().__init__(
            LocalService("podium", api_key, public_paths=("/health",)), lambda: PodiumStore(db_path)
        )
        self._secrets_key = secrets_key
        self._services = AgentServices(ensemble_url=ensemble_url)
        self._runtimes: dict[str, InstanceRuntime] = {}
        app = self.service.app
        app.on_request(self._refuse_unknown_instance_socket)
        add = app.add_route
        instance = "/api/v1/instances/<instance_id>"
        add(self._health, "/health", methods=["GET"], name="health")
        add(self._deployments, "/api/v1/deployments", methods=["GET"], name="deployments")
        add(self._create, "/api/v1/instances", methods=["POST"], name="create_instance")
        add(self._get, instance, methods=["GET"], name="get_instance")
        add(self._delete, instance, methods=["DELETE"], name="delete_instance")
        add(self._messages, f"{instance}/messages", methods=["GET"], name="messages")
        add(self._files, f"{instance}/files", methods=["GET"], name="files")
        add(self._history, f"{instance}/files/<path:path>/history", methods=["GET"], name="history")
        add(self._file, f"{instance}/files/<path:path>", methods=["GET"], name="file")
        add(self._drop_sockets, "/_local/drop-runtime-sockets", methods=["POST"], name="drop")
        app.add_websocket_route(self._agent_socket, "/agent/<instance_id>", name="agent_socket")

    async def stop(self) -> None:
        runtimes, self._runtimes = self._runtimes, {}
        for runtime in runtimes.values():
            await runtime.close(1001, "podium is stopping")
        await super().stop()

    def _runtime(self, instance_id: str) -> InstanceRuntime | None:
        """The instance's runtime, created on first use (also after a restart of the stack)."""
        runtime = self._runtimes.get(instance_id)
        if runtime is None:
            instance = self.store.get_instance(instance_id)
            if instance is None:
                return None
            agent = AGENTS[instance["agent_type"]]
            secrets = self._open_secrets(instance_id, instance["metadata"])
            runtime = InstanceRuntime(instance, self.store, agent, self._services, secrets)
            self._runtimes[instance_id] = runtime
        return runtime

    def _open_secrets(self, instance_id: str, metadata: dict[str, Any]) -> dict[str, str]:
        """The instance's secrets, opened (checked at creation, so failing here means the key
        changed across a restart: the agent then runs without them and says so when it needs
        one)."""
        sealed = self.store.sealed_secrets(instance_id)
        if sealed is None:
            return {}
        try:
            return open_sealed(sealed, self._secrets_key, aad=_aad(metadata))
        except SealError as exc:
            logger.warning("podium: instance {} secrets unreadable: {}", instance_id, exc)
            return {}

    # REST

    async def _health(self, request: Request) -> HTTPResponse:
        return json({"status": "ok"})

    async def _deployments(self, request: Request) -> HTTPResponse:
        agent_type = request.args.get("agent_type")
        found = [d for d in DEPLOYMENTS if agent_type is None or d["agent_type"] == agent_type]
        return json({"deployments": found})

    async def _create(self, request: Request) -> HTTPResponse:
        body = json_object(request)
        wanted = body.get("deployment_id")
        deployment = _DEPLOYMENTS_BY_ID.get(wanted) if isinstance(wanted, str) else None
        if deployment is None:
            raise BadRequest(f"unknown deployment_id {wanted!r}")
        config, metadata = _object_field(body, "config"), _object_field(body, "metadata")
        sealed = _sealed_secrets(body)
        if sealed is not None:
            # Opened once to refuse what can never be opened; kept sealed (podium_store.py).
            try:
                open_sealed(sealed, self._secrets_key, aad=_aad(metadata))
            except SealError as exc:
                logger.warning("podium: refused an instance: {}", exc)
                return error_response(422, "SECRETS_UNREADABLE", str(exc))
        record = self.store.create_instance(
            deployment["deployment_id"], deployment["agent_type"], config, metadata, sealed
        )
        fields = ("instance_id", "deployment_id", "status", "created_at")
        return json({k: record[k] for k in fields}, status=201)

    async def _get(self, request: Request, instance_id: str) -> HTTPResponse:
        record = self.store.get_instance(unquote(instance_id))
        return json(record) if record else _instance_not_found()

    async def _delete(self, request: Request, instance_id: str) -> HTTPResponse:
        instance_id = unquote(instance_id)
        runtime = self._runtimes.pop(instance_id, None)
        if runtime is not None:
            await runtime.close(4004, "instance deleted")
        return empty() if self.store.delete_instance(instance_id) else _instance_not_found()

    async def _messages(self, request: Request, instance_id: str) -> HTTPResponse:
        instance_id = unquote(instance_id)
        if self.store.get_instance(instance_id) is None:
            return _instance_not_found()
        limit = _int_arg(request, "limit", 50, 1, MAX_MESSAGES_PAGE)
        try:
            messages, has_more = self.store.list_messages(
                instance_id, limit, request.args.get("before")
            )
        except UnknownCursor:
            raise BadRequest("before names no message of this instance") from None
        return json({"messages": messages, "has_more": has_more})

    async def _files(self, request: Request, instance_id: str) -> HTTPResponse:
        instance_id = unquote(instance_id)
        if self.store.get_instance(instance_id) is None:
            return _instance_not_found()
        depth = _int_arg(request, "depth", 1, 1, MAX_LIST_DEPTH)
        entries = self.store.list_files(instance_id, request.args.get("path", ""), depth)
        if entries is None:
            return error_response(404, "NOT_FOUND", "no such path")
        return json({"entries": entries})

    async def _file(self, request: Request, instance_id: str, path: str) -> HTTPResponse:
        instance_id = unquote(instance_id)
        iteration = _int_arg(request, "iteration", 0, 1, 2**31) or None  # 0: latest
        record = self.store.read_file(instance_id, unquote(path), iteration)
        if record is None:
            return error_response(404, "NOT_FOUND", "no such file or iteration")
        try:
            content, encoding = record["content"].decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            content, encoding = base64.b64encode(record["content"]).decode(), "base64"
        return json(
            {
                "path": record["path"],
                "content": content,
                "encoding": encoding,
                "size": record["size"],
                "iteration": record["iteration"],
            }
        )

    async def _history(self, request: Request, instance_id: str, path: str) -> HTTPResponse:
        iterations = self.store.file_history(unquote(instance_id), unquote(path))
        if not iterations:
            # The route also matches reading a file that is itself named `history`.
            return await self._file(request, instance_id, f"{path}/history")
        return json({"iterations": iterations})

    async def _drop_sockets(self, request: Request) -> HTTPResponse:
        dropped = sum(runtime.drop_socket() for runtime in self._runtimes.values())
        return json({"dropped": dropped})

    # runtime socket

    async def _refuse_unknown_instance_socket(self, request: Request) -> HTTPResponse | None:
        # Checked before the upgrade so the gateway sees a plain 404 for a gone instance.
        if request.path.startswith("/agent/"):
            instance_id = unquote(request.path.removeprefix("/agent/"))
            if self.store.get_instance(instance_id) is None:
                return _instance_not_found()
        return None

    async def _agent_socket(self, request: Request, ws: Websocket, instance_id: str) -> None:
        runtime = self._runtime(unquote(instance_id))
        if runtime is None:  # deleted between the check and the upgrade
            await ws.close(4004, "no such instance")
            return
        runtime.attach(ws)
        try:
            while (raw := await ws.recv()) is not None:
                runtime.handle_frame(raw)
        except (ConnectionClosed, WebsocketClosed):
            pass
        finally:
            runtime.detach(ws)
