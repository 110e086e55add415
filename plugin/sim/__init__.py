"""Offline OpenAI-compatible simulator."""
