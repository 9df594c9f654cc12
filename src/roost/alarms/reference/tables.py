"""Tables of this part (filled by its owner); part of :data:`roost.store.metadata.metadata`."""

from __future__ import annotations
