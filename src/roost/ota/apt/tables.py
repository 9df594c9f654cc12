"""Tables of apt repositories; part of :data:`roost.store.metadata.metadata`."""

from __future__ import annotations
