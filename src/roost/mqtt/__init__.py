"""MQTT device gateway: sans-IO packet codec and (later) the asyncio server on top of it."""
