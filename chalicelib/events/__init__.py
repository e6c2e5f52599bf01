"""Entry points of the event-driven functions (timers, inbound, outbound).

Their Lambdas load a handler module directly (``Handler: chalicelib.events.<module>.<name>``),
never app.py, so what app.py sets up for the API is set up here too, before any handler logs:
the same scrubbed JSON lines (logging_setup.configure, idempotent); the settings' secrets are
registered for scrubbing when the wiring first builds its context.
"""
from .. import logging_setup

logging_setup.configure()
