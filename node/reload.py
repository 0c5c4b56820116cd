"""Reloading the config file in a running node (SIGHUP): the remotes, the ACL and [cache].

Hospitals add modalities and PACS while the node runs; those parts of
the config take effect at once.  Every other key is read at start only: a
change to one is reported and waits for the next restart.  A file that does
not load keeps the running config (the caller logs the error).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .config import ConfigError, Remote, Settings, load

RELOADED = "[dicom].allowed_calling_aets, [cache] and [[remotes]]"


@dataclass(frozen=True)
class Reload:
    """The settings to run with from now on, and what changed, in words."""

    settings: Settings
    changes: list[str]  # applied
    restart_needed: list[str]  # keys that changed but are read at start only

    @property
    def forwarding_changed(self) -> bool:
        return any(c.startswith("forwarding") for c in self.changes)


def reload_settings(current: Settings) -> Reload:
    """Read the config file *current* came from; raise ConfigError (naming the key) if it is wrong."""
    if current.source is None:
        raise ConfigError("the running config was not read from a file: nothing to reload")
    new = load(current.source)
    for remote in new.remotes:
        if remote.ae_title == current.dicom.ae_title:
            raise ConfigError(f"remote {remote.name!r}: {remote.ae_title!r} is this node's own AE title")
    settings = dataclasses.replace(
        current,
        dicom=dataclasses.replace(current.dicom, allowed_calling_aets=new.dicom.allowed_calling_aets),
        remotes=new.remotes,
        cache=new.cache,  # read per query: the read-through policy takes effect at once
    )
    changes = _remote_changes(current.remotes, new.remotes)
    old_acl, new_acl = current.dicom.allowed_calling_aets, new.dicom.allowed_calling_aets
    if old_acl != new_acl:
        changes.append(f"[dicom].allowed_calling_aets {_list(old_acl)} -> {_list(new_acl)}")
    for f in dataclasses.fields(new.cache):
        old_value, new_value = getattr(current.cache, f.name), getattr(new.cache, f.name)
        if old_value != new_value:
            changes.append(f"[cache].{f.name} {old_value!r} -> {new_value!r}")
    if _forwarding(current) != _forwarding(settings):
        names = ", ".join(r.name for r in settings.remotes if r.forward) or "none"
        changes.append(f"forwarding to: {names}")
    return Reload(settings, changes, _restart_needed(current, new))


def _list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(values) + "]" if values else "[] (any)"


def _forwarding(settings: Settings) -> tuple[Remote, ...]:
    return tuple(r for r in settings.remotes if r.forward)


def _describe(remote: Remote) -> str:
    extra = []
    if remote.accession_prefixes:
        extra.append(f"accession_prefixes {list(remote.accession_prefixes)}")
    if remote.forward:
        extra.append("forward")
    if remote.read_through:
        extra.append("read_through")
    return f"{remote.ae_title}@{remote.host}:{remote.port}" + (f", {', '.join(extra)}" if extra else "")


def _remote_changes(old: tuple[Remote, ...], new: tuple[Remote, ...]) -> list[str]:
    before = {r.name: r for r in old}
    after = {r.name: r for r in new}
    changes = []
    for name, remote in after.items():
        if name not in before:
            changes.append(f"remote {name!r} added ({_describe(remote)})")
        elif remote != before[name]:
            diffs = [
                f"{f.name} {getattr(before[name], f.name)!r} -> {getattr(remote, f.name)!r}"
                for f in dataclasses.fields(Remote)
                if getattr(before[name], f.name) != getattr(remote, f.name)
            ]
            changes.append(f"remote {name!r} changed: {', '.join(diffs)}")
    changes += [f"remote {name!r} removed" for name in before if name not in after]
    return changes


def _restart_needed(current: Settings, new: Settings) -> list[str]:
    """``[section].key`` of every changed key outside what a reload applies."""
    keys = []
    for section in dataclasses.fields(Settings):
        old_value, new_value = getattr(current, section.name), getattr(new, section.name)
        if not dataclasses.is_dataclass(old_value) or section.name == "cache":
            continue  # remotes and [cache] (applied) and the source path
        for f in dataclasses.fields(old_value):
            if (section.name, f.name) == ("dicom", "allowed_calling_aets"):
                continue
            if getattr(old_value, f.name) != getattr(new_value, f.name):
                keys.append(f"[{section.name}].{f.name}")
    return keys
