"""Packaging for OpenWhisk: the action zips that ``manifest.yaml`` deploys.

See :mod:`owdedup.deploy.build` (``plan_build``, ``build_actions``, ``size_report``); run
``python -m owdedup.deploy [--dry-run]`` from the project folder. The build's steps are
:mod:`~owdedup.deploy.runtime` (the python:3.11 target and its trims),
:mod:`~owdedup.deploy.needs` (what an action needs), :mod:`~owdedup.deploy.install` (the zip's
virtualenv) and :mod:`~owdedup.deploy.zipper` (bytecode, the reproducible zip).
"""
