"""Serving voted soft-prompt ensembles over HTTP with Ray Serve (see README.md in this folder).

`app.build_app` / `app.app_builder` build the application; `softprompt serve` runs it.
"""
