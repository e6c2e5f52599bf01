"""The stack's OpenTelemetry export of the insights: ``insights_export``, every hour, sends each
pipeline's figures to the OTLP/HTTP endpoint of the settings (service/insights_export.py says
what is sent; docs/otel.md "In the stack").

Hourly, by decision: the aggregates are daily and the counts cumulative, so a backend loses no
figure between exports and draws its rates from successive points; an hour keeps the cost at 24
reads of each pipeline's last 7 days a day, and a collector that is down for a while costs
nothing but staleness (the next export sends the whole totals again). The template creates the
function only when the ``OtlpEndpoint`` parameter is set (infra/part_insights_export.py); without
an endpoint in its settings it sends nothing.
"""
from __future__ import annotations

import logging

from chalice import Blueprint, Rate

from .. import wiring

log = logging.getLogger(__name__)

EXPORT_RATE_HOURS = 1

handlers = Blueprint(__name__)


def run_export(ctx) -> object:
    """One export with the context's settings; None (nothing sent) when no endpoint is set."""
    from ..adapters import otlp  # the exporter and its config: only this function loads them
    from ..service.insights_export import export_insights

    config = otlp.OtlpConfig.from_settings(ctx.settings)
    if config is None:
        log.info("insights export: no OTLP endpoint set, nothing sent")
        return None
    return export_insights(ctx, otlp.OtlpExporter(config, clock=ctx.clock.now))


@handlers.schedule(Rate(EXPORT_RATE_HOURS, unit=Rate.HOURS))
def insights_export(event):
    run_export(wiring.context())
