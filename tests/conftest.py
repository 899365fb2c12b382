"""Shared test settings. Unit tests live in tests/unit (no emulators); tests/stack runs the local stack."""

from hypothesis import settings

settings.register_profile("ci", deadline=None, max_examples=200)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile("ci" if __import__("os").environ.get("CI") else "dev")
