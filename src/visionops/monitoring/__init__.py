"""Acting on monitoring: Alertmanager's alerts roll a registry alias back.

``alerts`` models Alertmanager's webhook payload and decides what each alert asks of the
registry (``AlertRollback``); ``receiver`` is the HTTP endpoint Alertmanager posts to, served by
``visionops alerts receive``::

    visionops alerts receive --port 9095 --tracking-uri http://mlflow:5000  # VISIONOPS_ALERTS_TOKEN
"""
