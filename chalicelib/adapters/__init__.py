"""Clients for AWS services other than DynamoDB, each created lazily on first use (so the API
Lambda, which never needs them, pays nothing for them at cold start)."""
