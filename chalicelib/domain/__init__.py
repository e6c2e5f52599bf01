"""Pure domain: no boto3, pynamodb or chalice imports allowed here (a test enforces it)."""
