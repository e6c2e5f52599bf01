"""stagetrack: the command-line client of the stagetrack API.

Standard library only (urllib, argparse, json): installing the CLI installs nothing else. It talks
to the public HTTP API as any client would and never imports the service's code."""

__version__ = "0.13.0"
