"""Blueprints by audience. Routes parse input, call one service, commit, respond."""
