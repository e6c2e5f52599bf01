"""The HTTP entry point: chalice blueprints that only translate.

- routing.py: ``route()``, the decorator every view is registered with (``RouteSpec``,
  ``declared_routes``); responses.py: JSON and error bodies, the status of each domain error;
  parsing.py: bodies, query strings, media types, sizes, the base URL; security.py:
  authentication (credentials.py reads the headers, aksk.py checks AK/SK signatures), scopes and
  pipeline limits, rate headers, the access log; idempotency.py: Idempotency-Key on POSTs.
- native.py, operations.py, tokens.py, subscriptions.py, webhooks.py, openapi.py: the native API;
  fallbacks.py: the methods a path does not serve.
- gocd.py, codearts.py, buddy.py: the dialects, each with its wire format (``*_wire.py``, pure).
"""
