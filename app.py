"""Wiring only: the Chalice app, its blueprints and its event handlers."""
from chalice import Chalice

from chalicelib import logging_setup
from chalicelib.api import (
    browse,
    buddy,
    codearts,
    fallbacks,
    gocd,
    insights,
    native,
    openapi,
    operations,
    schedules,
    session,
    subscriptions,
    tokens,
    web,
    webhooks,
)
from chalicelib.events import inbound, insights_export, outbound, rebuilds, timers, wakeups
from chalicelib.settings import Settings

app = Chalice(app_name="stagetrack")
logging_setup.configure(app.log)  # JSON lines with request ids, secrets scrubbed
app.register_blueprint(native.routes)
app.register_blueprint(browse.routes)
app.register_blueprint(insights.routes)  # GET /api/insights (issue 14)
app.register_blueprint(tokens.routes)
app.register_blueprint(session.routes)  # the dashboard's browser session
app.register_blueprint(openapi.routes)
app.register_blueprint(operations.routes)
app.register_blueprint(schedules.routes)  # a pipeline's cron schedules (issue 15)
app.register_blueprint(gocd.routes)  # compatibility endpoints: GoCD, CodeArts, Buddy
app.register_blueprint(codearts.routes)
app.register_blueprint(buddy.routes)
app.register_blueprint(timers.handlers)
app.register_blueprint(wakeups.handlers)  # EventBridge Scheduler's wake-ups (issue 15)
app.register_blueprint(webhooks.routes)
app.register_blueprint(subscriptions.routes)
app.register_blueprint(web.routes)  # the dashboard's pages at /
app.register_blueprint(inbound.handlers)
app.register_blueprint(outbound.handlers)
app.register_blueprint(insights_export.handlers)  # the hourly OTLP export (when OtlpEndpoint is set)
app.register_blueprint(rebuilds.handlers)  # the insights rebuild, invoked by POST /api/insights/rebuild
fallbacks.install(app)  # after every route: 405 with Allow / OPTIONS for the methods a path lacks

_settings = Settings.from_env()
logging_setup.scrub_settings(_settings)  # the admin token and keys never reach a log line
if _settings.local_ticker:  # `make run`: chalice local runs no schedules
    from chalicelib import ticker

    ticker.start_local(_settings.ticker_interval_seconds)

    from chalicelib.events.outbound import start_local as start_local_outbox

    start_local_outbox(_settings.ticker_interval_seconds)  # the stream outbox and deliveries, locally
