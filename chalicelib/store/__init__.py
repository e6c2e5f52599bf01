"""DynamoDB storage: the only package that talks to DynamoDB (tests/unit/test_layers.py).

Import the module you need (``store.repository``, ``store.schema``, ...); importing the package
itself loads nothing, so a Lambda cold start pays only for the modules its handler uses.
"""
