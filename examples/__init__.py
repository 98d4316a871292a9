"""Example Snakepit adapters (``examples.textstats``, ``examples.sentiment:SentimentModel``)."""
