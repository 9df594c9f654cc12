"""Schemathesis hooks for test_openapi_conformance: the run never revokes the key it runs with.

Loaded by the schemathesis subprocess (SCHEMATHESIS_HOOKS), not by pytest.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

# The id of the admin API key the run authenticates with (set by the test).
OWN_KEY_ID = os.environ.get("CONFORMANCE_API_KEY_ID", "")
# Sent instead: an id no key has, so DELETE /api-keys/{key_id} is still exercised (404).
STAND_IN_KEY_ID = "conformance-kept"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Revoking the run's own key would make every later request 401: send a stand-in id."""
    if (
        OWN_KEY_ID
        and case.operation.path == "/api/v1/api-keys/{key_id}"
        and (case.path_parameters or {}).get("key_id") == OWN_KEY_ID
    ):
        case.path_parameters["key_id"] = STAND_IN_KEY_ID
