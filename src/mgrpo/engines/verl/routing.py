"""verl's rollout clients and agent loop managers, as the rollout schemes use them.

- :class:`ReplicaTaggingClient`: verl's ``LLMServerClient`` that writes the address of the
  server that served each request into the output's extra fields (verl copies those into the
  batch's non-tensor columns), so every rollout row names its replica.
- :func:`group_manager`: an ``AgentLoopManager`` over a subset of the replicas, with its own
  router (verl's default load balancer over exactly those servers).
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from typing import Any

from verl.experimental.agent_loop import AgentLoopManager
from verl.workers.rollout.llm_server import LLMServerClient
from verl.workers.rollout.router import get_router_handle

from mgrpo.engines.verl.replicas import SERVER

# The servers one ``generate`` call acquired; per asyncio task, so concurrent requests sharing a
# client never see each other's.
_served: contextvars.ContextVar[list[str]] = contextvars.ContextVar("mgrpo_served")


class ReplicaTaggingClient(LLMServerClient):
    """``LLMServerClient`` whose outputs carry ``extra_fields[SERVER]``: the serving address."""

    async def _acquire_server(self, request_id: str, **extra: Any) -> tuple[str, Any]:
        server_id, server = await super()._acquire_server(request_id, **extra)
        served = _served.get(None)
        if served is not None:
            served.append(server_id)
        return server_id, server

    async def generate(self, request_id: Any, **kwargs: Any) -> Any:
        served: list[str] = []
        token = _served.set(served)
        try:
            output = await super().generate(request_id, **kwargs)
        finally:
            _served.reset(token)
        output.extra_fields[SERVER] = served[-1] if served else None
        return output


class TaggedAgentLoopManager(AgentLoopManager):
    """verl's ``AgentLoopManager`` whose client tags each output with its replica.

    Set as ``actor_rollout_ref.rollout.agent.agent_loop_manager_class``: verl's trainer hands it
    a plain client over every replica; the same router is kept, only the client class changes.
    """

    def __init__(self, config: Any, llm_client: LLMServerClient, *args: Any, **kwargs: Any):
        if not isinstance(llm_client, ReplicaTaggingClient):
            llm_client = ReplicaTaggingClient(
                config=config, load_balancer_handle=llm_client._load_balancer
            )
        super().__init__(config, llm_client, *args, **kwargs)


def group_manager(
    config: Any, servers: Mapping[str, Any], reward_workers: Sequence[Any] | None
) -> AgentLoopManager:
    """An agent loop manager whose requests go only to ``servers`` (address -> handle)."""
    rollout = config.actor_rollout_ref.rollout
    router = get_router_handle(
        servers=dict(servers),
        router_config_path=rollout.get("router_config_path"),
        full_determinism=rollout.get("full_determinism", False),
    )
    client = ReplicaTaggingClient(config=config, load_balancer_handle=router)
    return TaggedAgentLoopManager.create(
        config=config, llm_client=client, reward_loop_worker_handles=reward_workers
    )
