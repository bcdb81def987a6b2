"""``liqmon dashboard``: the ops page over the MQTT topic tree of every liqmon instance.

::

    broker ── MqttLink (bridge) ──▶ Book ──▶ Hub: coalesced deltas ──▶ WebSocket ──▶ page
       ▲          (alerts.link)    (pure)        (server)                  static/ (no build)
       └──── what-if requests ◀──── ShockAsker ◀──── the page's what-if panel

Pure, sans-I/O parts: :mod:`~liqmon.dashboard.book` (the current book, the alerts since start,
instance and feed health, the compact wire form), :mod:`~liqmon.dashboard.ladder` (liquidation
ladders), :mod:`~liqmon.dashboard.throttle` (coalescing in time) and
:mod:`~liqmon.dashboard.access` (who may connect). The shell: :mod:`~liqmon.dashboard.bridge`
(MQTT) and :mod:`~liqmon.dashboard.server` (HTTP, WebSocket, one task group).
"""
