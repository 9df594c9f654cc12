"""Tables of artifacts; part of :data:`roost.store.metadata.metadata`."""

from __future__ import annotations
