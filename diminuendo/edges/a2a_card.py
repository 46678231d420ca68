"""The A2A agent card (`/.well-known/agent-card.json`): the gateway's agent types as skills.

The card declares streaming, JSON-RPC in the current and the 0.3 protocol versions at one URL,
and (outside dev mode) the bearer token REST takes. The agent types come from Podium, asked at
most once a minute per worker (`AgentTypes`).
"""

from __future__ import annotations

import time

from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
)
from a2a.utils.constants import PROTOCOL_VERSION_0_3, TransportProtocol

from diminuendo import __version__
from diminuendo.gateway.context import Gateway

AGENT_TYPES_CACHE_S = 60.0


def agent_card(url: str, agent_types: list[str], bearer: bool = False) -> AgentCard:
    """The card of the JSON-RPC endpoint at `url`: one skill per agent type, streaming, the
    current and 0.3 protocol versions, and (when `bearer`) the bearer token REST takes."""
    card = AgentCard(
        name="Diminuendo",
        description="The platform's agents. A new conversation names its agent type in the "
        'message metadata ({"agentType": …}); contextId is the gateway session id.',
        version=__version__,
        supported_interfaces=[
            AgentInterface(
                url=url, protocol_binding=TransportProtocol.JSONRPC, protocol_version="1.0"
            ),
            AgentInterface(
                url=url,
                protocol_binding=TransportProtocol.JSONRPC,
                protocol_version=PROTOCOL_VERSION_0_3,
            ),
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain", "application/json"],
        skills=[
            AgentSkill(
                id=agent_type,
                name=agent_type,
                description=f"A turn of the `{agent_type}` agent",
                tags=["diminuendo", agent_type],
            )
            for agent_type in agent_types
        ],
    )
    if bearer:
        card.security_schemes["bearer"].CopyFrom(
            SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="bearer", bearer_format="JWT"
                )
            )
        )
        requirement = SecurityRequirement()
        requirement.schemes["bearer"].SetInParent()
        card.security_requirements.append(requirement)
    return card


class AgentTypes:
    """Podium's agent types, fetched again once `AGENT_TYPES_CACHE_S` old (or while empty)."""

    def __init__(self) -> None:
        self._fetched_at = 0.0
        self._types: list[str] = []

    async def get(self, gateway: Gateway) -> list[str]:
        if time.monotonic() - self._fetched_at > AGENT_TYPES_CACHE_S or not self._types:
            self._types = await gateway.podium.agent_types()
            self._fetched_at = time.monotonic()
        return self._types
