"""Tables of provisioning (issue 5); part of :data:`roost.store.schema.metadata`."""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401

from roost.store.schema import UTCDateTime, metadata  # noqa: F401
