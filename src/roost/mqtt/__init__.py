"""Roost's MQTT device gateway (MQTT 3.1.1 and 5.0, over TCP and WebSocket).

Layers, bottom up:

* the sans-IO codec: :mod:`~roost.mqtt.codec` (public face of ``packets``, ``wire``,
  ``decoder``, ``encoder``) and :mod:`~roost.mqtt.topics` (topic syntax and the device ACL);
* the sans-IO session state machine: :mod:`~roost.mqtt.session` (one connection's life),
  :mod:`~roost.mqtt.inbound` (PUBLISH, SUBSCRIBE...), :mod:`~roost.mqtt.outbound` (server →
  device delivery), :mod:`~roost.mqtt.state` (what a persistent session keeps), behind the ports
  of :mod:`~roost.mqtt.ports`;
* :mod:`~roost.mqtt.gateway`: the registry of connections and sessions, timers, the API
  (``deliver``, ``route``, ``on_subscribe``) and the table of refusal codes;
* the thin IO: :mod:`~roost.mqtt.server` (asyncio listener) and :mod:`~roost.mqtt.websocket`
  (``/mqtt``).
"""
