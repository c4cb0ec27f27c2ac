"""Reporting on finished work: a sweep's report (read from its MLflow and Optuna stores), scaling-law
transfer (which may run a verification sweep), and a trial checkpoint exported and scored.

Above `raycl.analysis` (pure: data in, figures and tables out) and `raycl.sweep`: this is where their
results meet the stores.
"""
