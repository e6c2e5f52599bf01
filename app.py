"""Wiring only: the Chalice app, its blueprints and its event handlers."""
from chalice import Chalice

from chalicelib import logging_setup
from chalicelib.api import fallbacks
from chalicelib.api.buddy import buddy
from chalicelib.api.codearts import codearts
from chalicelib.api.gocd import gocd
from chalicelib.api.native import native
from chalicelib.api.openapi import meta
from chalicelib.api.operations import ops
from chalicelib.api.subscriptions import subscription_api
from chalicelib.api.tokens import token_api
from chalicelib.api.webhooks import webhooks
from chalicelib.events.inbound import inbound
from chalicelib.events.outbound import outbound
from chalicelib.events.timers import timers
from chalicelib.settings import Settings

app = Chalice(app_name="stagetrack")
logging_setup.configure(app.log)  # JSON lines with request ids, secrets scrubbed
app.register_blueprint(native)
app.register_blueprint(token_api)
app.register_blueprint(meta)
app.register_blueprint(ops)
app.register_blueprint(gocd)  # compatibility endpoints: GoCD, CodeArts, Buddy
app.register_blueprint(codearts)
app.register_blueprint(buddy)
app.register_blueprint(timers)
app.register_blueprint(webhooks)
app.register_blueprint(subscription_api)
app.register_blueprint(inbound)
app.register_blueprint(outbound)
fallbacks.install(app)  # after every route: 405 with Allow / OPTIONS for the methods a path lacks

_settings = Settings.from_env()
logging_setup.scrub_settings(_settings)  # the admin token and keys never reach a log line
if _settings.local_ticker:  # `make run`: chalice local runs no schedules
    from chalicelib import ticker

    ticker.start_local(_settings.ticker_interval_seconds)

    from chalicelib.events.outbound import start_local as start_local_outbox

    start_local_outbox(_settings.ticker_interval_seconds)  # the stream outbox and deliveries, locally
