"""Tokens Forge: the shared package every Lambda function (and the local stack) imports."""
