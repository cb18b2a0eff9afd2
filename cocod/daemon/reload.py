"""SIGHUP and ``cocod reload``: re-read config.toml and apply the difference.

Instances added to the file start, removed ones stop, changed ones (definition, params,
live, auto_setup) restart; unchanged instances are not touched, so their watchers and
catch-up state survive a reload. Instances added at runtime (``cocod add``) are not the
file's to change: a file instance with the same name is refused with a warning. Whether an
instance is paused is not part of the file either: a changed instance restarts paused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from cocod.daemon.config import InstanceConfig, load_config

if TYPE_CHECKING:
    from cocod.daemon.service import Daemon

log = structlog.get_logger(__name__)


async def apply_reload(daemon: Daemon) -> dict[str, Any]:
    """Load the file again (a bad file raises and changes nothing) and apply it."""
    new = load_config(daemon.config.path)
    old_flows = daemon.config.flows
    added = [n for n in new.flows if n not in old_flows]
    removed = [n for n in old_flows if n not in new.flows]
    changed = [
        n
        for n in new.flows
        if n in old_flows and new.flows[n].identity() != old_flows[n].identity()
    ]
    instances = daemon.instances
    for name in removed + changed:
        instance = instances.by_name.get(name)
        if instance is not None and instance.origin == "config":
            await instances.remove(instance)
    daemon.config.flows = new.flows
    instances.max_open = new.max_open_flows
    instances.idle_ttl = new.idle_ttl
    for name in added + changed:
        add_from_config(daemon, new.flows[name])
    log.info("daemon.reloaded", added=added, removed=removed, changed=changed)
    return {"added": added, "removed": removed, "changed": changed}


def add_from_config(daemon: Daemon, instance_config: InstanceConfig) -> None:
    existing = daemon.instances.by_name.get(instance_config.name)
    if existing is not None:
        log.warning("instance.name_taken", instance=instance_config.name, by=existing.origin)
        return
    daemon.instances.add(instance_config, "config")
