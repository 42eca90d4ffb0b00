"""Home Assistant MQTT discovery: every topic appears in Home Assistant as a device whose action replies
fire automations, with no YAML written by hand.

Home Assistant connects to pushgate's broker with a user token and reads ``<discovery_prefix>/#``. For each
topic the gateway keeps, **retained**:

- ``<dp>/event/pushgate_<topic>/action/config``: an event entity (``event.pushgate_<topic>_action``) whose
  ``event_types`` are the topic's action ids, and
- ``<dp>/device_automation/pushgate_<topic>/<action>/config``: one device trigger per action id
  (``type: action``, ``subtype: <action id>``, as zigbee2mqtt names its action triggers). The node level
  carries the topic, so topic ``a_b`` with action ``c`` and topic ``a`` with ``b_c`` cannot collide; an
  action id that is not a valid object id (``[A-Za-z0-9_-]``) is named by a hash of it.

Both share a ``device`` block (identifiers from the topic's id, so a topic deleted and made again under
the same name is a new device) and the ``state_topic`` ``<prefix>/<topic>/event``, on which each reported
action is published as ``{"event_type", "message_id", "reply_text"}``, not retained.

Decisions:

- **Which ids**: the ids the topic's messages offered (a message declares its actions when it is pushed;
  a pre-defined set of ``gateway.categories`` is declared whole by such a message) and every id reported
  on it (a report must name an offered id, so it is one of them). They are read from the stored messages at
  start, so ids of messages pruned by retention are dropped at the next start; a push or a report with an
  id not seen before republishes the configs at once.
- **When**: at start for every topic; at once when this process creates, renames, re-privatises or deletes
  a topic (a deleted topic's configs are cleared with an empty retained payload, which removes the device
  from Home Assistant); every ``_RESYNC_EVERY`` seconds the topic list is compared again, which catches
  changes made by another process (the CLI). One task publishes, so configs never overtake each other.
- **Privacy**: the state topic is under the pushgate prefix, so the topic ACL governs it exactly like
  ``…/action``: only the topic's keys and its owner (any reader for a public topic) receive the events, and
  clients cannot publish on it. The configs name the topic, so the broker delivers those of a private topic
  only to clients that may read the topic (its owner's Home Assistant), on top of ``[mqtt] home_acl``;
  ``topic_for`` answers for topics just deleted, so their owner still receives the clearing payload.
  Clients may not publish under ``<dp>/+/pushgate_<topic>/`` at all.
- **Events are not lost**: they go through the outbox as ``…/action`` events do (at least once; waiting
  for a subscriber up to ``[outbox] mqtt_pending_ttl``), so a Home Assistant that restarts gets the taps it
  missed when it subscribes again. A hub away for hours therefore fires late automations; Home Assistant
  carries the ``message_id``, so one may check it against the message.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from sqlalchemy import String, cast, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.access import TopicInfo
from gateway.channels.mqtt import MqttEgress, message_topic
from gateway.config import HomeAssistantConfig
from gateway.errors import ConfigError
from gateway.json_output import compact_json
from gateway.storage.models import Message, Topic

__all__ = ["NODE_PREFIX", "STATE_EVENT", "HomeAssistant", "action_object_id", "state_payload"]

log = logging.getLogger(__name__)

NODE_PREFIX = "pushgate_"  # the node level of a discovery topic: pushgate_<topic>
STATE_EVENT = "event"  # the MQTT event name: <prefix>/<topic>/event carries the state payloads
_RESYNC_EVERY = 30.0  # seconds between comparisons of the topic list (changes made by another process)
_TOMBSTONES = 1000  # deleted topics remembered for the ACL of their clearing payloads
_OBJECT_ID = re.compile(r"[A-Za-z0-9_-]+")
_CONFIG_QOS = 1


def _version() -> str:
    try:
        return metadata.version("pushgate")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0"


def action_object_id(action_id: str) -> str:
    """The discovery object id of an action: the id itself when HA accepts it, else a stable hash."""
    if _OBJECT_ID.fullmatch(action_id):
        return action_id
    return "h_" + hashlib.sha256(action_id.encode()).hexdigest()[:16]


def state_payload(action_id: str, message_id: str, reply_text: str | None) -> dict[str, Any]:
    """What the event entity and the device triggers receive for one reported action."""
    return {"event_type": action_id, "message_id": message_id, "reply_text": reply_text}


class HomeAssistant:
    """Keeps the retained discovery configs in step with the topics and their action ids."""

    def __init__(
        self, sessions: async_sessionmaker[Any], config: HomeAssistantConfig, mqtt_prefix: str
    ) -> None:
        prefix = config.discovery_prefix
        if config.discovery and (
            not prefix or any(c in prefix for c in "/+#") or prefix.startswith("$") or prefix == mqtt_prefix
        ):
            raise ConfigError(
                f"[homeassistant] discovery_prefix {prefix!r} must be one MQTT topic level without "
                f"wildcards, not starting with $, and not the [mqtt] prefix {mqtt_prefix!r}"
            )
        self.enabled = config.discovery
        self.prefix = prefix
        self._sessions = sessions
        self._mqtt_prefix = mqtt_prefix
        self._version = _version()
        self._egress: MqttEgress | None = None
        self._ids: dict[str, set[str]] = {}  # topic id -> action ids (every known topic has an entry)
        self._published: dict[str, dict[str, bytes]] = {}  # topic name -> {config topic: payload}
        self._announced: dict[str, TopicInfo] = {}  # topics with configs, by name
        self._tombstones: dict[str, TopicInfo] = {}  # recently deleted topics, by name
        self._dirty: set[str] = set()  # topic names to look at again
        self._full = True  # the next pass compares every topic
        self._wake = asyncio.Event()
        self._stopping = False

    # -- hooks the core calls ------------------------------------------------------------------------

    def attach(self, egress: MqttEgress) -> None:
        """The broker is up: publish (the first pass announces every topic)."""
        self._egress = egress
        self._wake.set()

    def topic_changed(self, name: str) -> None:
        """A topic was created, renamed, made private or public, or deleted by this process."""
        if self.enabled:
            self._dirty.add(name)
            self._wake.set()

    def actions_used(self, topic: TopicInfo, action_ids: Iterable[str]) -> None:
        """A message offered, or a report named, these ids on ``topic``: republish if one is new. Cheap
        (a set look-up) on the push path."""
        if not self.enabled:
            return
        known = self._ids.get(topic.id)
        if known is None:  # a topic this process has not announced yet (made by the CLI): look at it
            self._dirty.add(topic.name)
            self._wake.set()
            return
        new = [action_id for action_id in action_ids if action_id not in known]
        if new:
            known.update(new)
            self._dirty.add(topic.name)
            self._wake.set()

    def state_events(self, action_id: str, message_id: str, reply_text: str | None) -> dict[str, Any]:
        """The outbox payloads by MQTT event name that ``gateway.actions`` adds for a reported action."""
        if not self.enabled:
            return {}
        return {STATE_EVENT: state_payload(action_id, message_id, reply_text)}

    def topic_for(self, name: str) -> TopicInfo | None:
        """A topic deleted recently, for the ACL of its clearing payloads (``None`` for others)."""
        return self._tombstones.get(name)

    def stop(self) -> None:
        """Let ``run`` return after the pass in progress (cancelling it mid-query would leave a database
        connection to be reset in the middle of a statement)."""
        self._stopping = True
        self._wake.set()

    # -- the publishing task -------------------------------------------------------------------------

    async def run(self) -> None:
        """Owned by ``Gateway.running``: one pass whenever something changed, and every resync period."""
        if not self.enabled:
            return
        while not self._stopping:
            try:
                # not wait_for: on 3.11 it swallows a cancellation that races with the event being set
                async with asyncio.timeout(_RESYNC_EVERY):
                    await self._wake.wait()
            except TimeoutError:
                self._full = True
            self._wake.clear()
            if self._egress is None or self._stopping:
                continue
            try:
                await self._pass()
            except Exception:
                log.exception("Home Assistant discovery failed; trying again in %.0fs", _RESYNC_EVERY)
                self._full = True

    async def _pass(self) -> None:
        full, dirty = self._full, self._dirty
        self._full, self._dirty = False, set()
        try:
            async with self._sessions() as session:
                query = select(Topic.id, Topic.name, Topic.is_private, Topic.owner_id)
                if not full:
                    query = query.where(Topic.name.in_(sorted(dirty)))
                topics = [TopicInfo(*row) for row in (await session.execute(query)).all()]
                unknown = [t.id for t in topics if t.id not in self._ids]
                if unknown:
                    await self._load_ids(session, unknown, everything=full and not self._ids)
        except BaseException:
            self._full, self._dirty = self._full or full, self._dirty | dirty
            raise
        names = {t.name for t in topics} | (set(self._published) if full else dirty)
        by_name = {t.name: t for t in topics}
        live_ids = {t.id for t in topics}
        for name in sorted(names):
            topic = by_name.get(name)
            if topic is None:
                self._forget(name)  # before the clear is published: the broker's ACL looks here
                await self._apply(name, {})
            else:
                self._tombstones.pop(name, None)
                self._announced[name] = topic
                await self._apply(name, self._configs(topic))
        if full:
            for topic_id in set(self._ids) - live_ids:
                del self._ids[topic_id]

    async def _load_ids(self, session: Any, topic_ids: list[str], *, everything: bool) -> None:
        """The action ids offered by the stored messages of these topics (one grouped scan of the
        distinct action lists: devices send the same few sets again and again)."""
        for topic_id in topic_ids:
            self._ids.setdefault(topic_id, set())
        actions = cast(Message.actions, String)
        query = (
            select(Message.topic_id, actions)
            .where(Message.actions.is_not(None), actions != "[]")
            .group_by(Message.topic_id, actions)
        )
        if not everything:
            query = query.where(Message.topic_id.in_(topic_ids))
        for topic_id, text in (await session.execute(query)).all():
            if topic_id not in self._ids:
                continue
            try:
                offered = json.loads(text)
            except ValueError:
                continue
            self._ids[topic_id].update(
                str(a["id"]) for a in offered if isinstance(a, Mapping) and a.get("id") is not None
            )

    def _forget(self, name: str) -> None:
        """Remember a deleted topic briefly, so its owner's Home Assistant may receive the clear."""
        info = self._announced.pop(name, None)
        if info is None:
            return
        self._tombstones[name] = info
        while len(self._tombstones) > _TOMBSTONES:
            del self._tombstones[next(iter(self._tombstones))]

    async def _apply(self, name: str, desired: dict[str, bytes]) -> None:
        assert self._egress is not None
        current = self._published.get(name, {})
        for config_topic in sorted(set(current) - set(desired)):
            await self._egress.publish_retained(config_topic, b"", _CONFIG_QOS)  # removes it from HA
        for config_topic, payload in desired.items():
            if current.get(config_topic) != payload:
                await self._egress.publish_retained(config_topic, payload, _CONFIG_QOS)
        if desired:
            self._published[name] = desired
        else:
            self._published.pop(name, None)

    # -- the configs ---------------------------------------------------------------------------------

    def event_config_topic(self, name: str) -> str:
        return f"{self.prefix}/event/{NODE_PREFIX}{name}/action/config"

    def trigger_config_topic(self, name: str, action_id: str) -> str:
        return f"{self.prefix}/device_automation/{NODE_PREFIX}{name}/{action_object_id(action_id)}/config"

    def _configs(self, topic: TopicInfo) -> dict[str, bytes]:
        """Every config of ``topic``, as the bytes to retain, by config topic."""
        ids = sorted(self._ids.get(topic.id, ()))
        state_topic = message_topic(self._mqtt_prefix, topic.name, STATE_EVENT)
        device = {
            "identifiers": [f"{NODE_PREFIX}{topic.id}"],
            "name": f"pushgate {topic.name}",
            "manufacturer": "pushgate",
            "model": "pushgate topic",
            "sw_version": self._version,
        }
        origin = {"name": "pushgate", "sw_version": self._version}
        configs = {
            self.event_config_topic(topic.name): {
                "name": "Action",
                "unique_id": f"{NODE_PREFIX}{topic.id}_action",
                "state_topic": state_topic,
                "event_types": ids,
                "qos": 1,
                "icon": "mdi:gesture-tap-button",
                "device": device,
                "origin": origin,
            }
        }
        for action_id in ids:
            configs[self.trigger_config_topic(topic.name, action_id)] = {
                "automation_type": "trigger",
                "topic": state_topic,
                "type": "action",
                "subtype": action_id,
                "payload": action_id,
                "value_template": "{{ value_json.event_type }}",
                "qos": 1,
                "device": device,
                "origin": origin,
            }
        return {config_topic: compact_json(config) for config_topic, config in configs.items()}
