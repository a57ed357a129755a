"""Packaging for OpenWhisk: the action zips that ``manifest.yaml`` deploys.

See :mod:`owdedup.deploy.build` (``plan_build``, ``build_actions``, ``size_report``); run
``python -m owdedup.deploy [--dry-run]`` from the project folder.
"""
