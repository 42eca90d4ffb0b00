"""The MQTT channel: publishes the envelope on ``<prefix>/<topic>/message`` through the embedded broker.

The core does not import the broker; ``broker/`` implements ``MqttEgress`` and the composition root hands
it in. A message (or an action event) for a topic nobody subscribes to waits (state ``waiting``) until a
subscriber appears, so a hub that is restarting or offline does not miss what was pushed meanwhile.
Receipt updates do not wait: each supersedes the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.channels import Job, Outcome, State

__all__ = ["MqttChannel", "MqttEgress", "message_topic"]


class MqttEgress(Protocol):
    async def subscriber_count(self, mqtt_topic: str) -> int:
        """Sessions (connected or persistent) whose subscriptions match ``mqtt_topic`` and may read it."""
        ...

    async def publish(self, mqtt_topic: str, payload: bytes, qos: int) -> int:
        """Hand the message to the broker's router in process (no loopback client); returns how many
        sessions it was for, as ``subscriber_count`` counts them (0: nobody, nothing was sent)."""
        ...

    async def publish_many(self, mqtt_topic: str, payloads: Sequence[bytes], qos: int) -> int:
        """``publish`` for one or more messages on one topic, in order, its subscribers found and checked
        once; returns how many sessions each was for."""
        ...

    async def publish_retained(self, mqtt_topic: str, payload: bytes, qos: int) -> None:
        """``publish`` with the retain flag: the broker keeps ``payload`` for later subscribers; an empty
        payload deletes the retained message (MQTT-3.3.1-10) after reaching the current subscribers."""
        ...


def message_topic(prefix: str, topic: str, event: str = "") -> str:
    """``<prefix>/<topic>/message`` for the message itself, ``…/action`` or ``…/receipt`` for its events."""
    return f"{prefix}/{topic}/{event or 'message'}"


class MqttChannel:
    name = "mqtt"

    def __init__(self, prefix: str, egress: MqttEgress) -> None:
        self._prefix = prefix
        self._egress = egress

    async def subscribers(self, topic: str) -> int:
        return await self._egress.subscriber_count(message_topic(self._prefix, topic))

    async def wants(self, topic: str, event: str) -> bool:
        """A receipt update is a snapshot that the next one supersedes (and GET /api/receipts has the
        current state): with nobody listening it is not stored at all. Everything else waits for one."""
        if event != "receipt":
            return True
        return await self._egress.subscriber_count(message_topic(self._prefix, topic, event)) > 0

    async def deliver(self, job: Job) -> Outcome:
        return (await self.deliver_many([job]))[0]

    async def deliver_many(self, jobs: list[Job]) -> list[Outcome]:
        """Jobs in a row on one topic and event are published together (``MqttEgress.publish_many``)."""
        outcomes: list[Outcome] = []
        start = 0
        while start < len(jobs):
            first = jobs[start]
            end = start + 1
            while end < len(jobs) and jobs[end].topic == first.topic and jobs[end].event == first.event:
                end += 1
            mqtt_topic = message_topic(self._prefix, first.topic, first.event)
            payloads = [job.payload for job in jobs[start:end]]
            count = await self._egress.publish_many(mqtt_topic, payloads, 1)  # routed once: sent and counted
            outcomes += [_outcome(first.event, count)] * (end - start)
            start = end
        return outcomes


def _outcome(event: str, count: int) -> Outcome:
    """What became of a message or event that ``count`` sessions were sent."""
    if count == 0:
        if event == "receipt":  # the subscriber left since ``wants``: the snapshot is not kept
            return Outcome(State.EXPIRED, error="no subscriber for receipt updates")
        return Outcome(State.WAITING)
    return Outcome(State.SENT, delivered=count)
