"""The embedded local stack: Podium, Ensemble and Unison stand-ins for dev mode and tests.

They speak only the upstream contract (shared/spec/UPSTREAMS.md), so the gateway talks to them
through the same clients it uses in production and never imports this package.
"""
