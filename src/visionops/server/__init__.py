"""The team tracking server: ``mlflow server`` on PostgreSQL with S3 artifacts and basic-auth.

``settings`` reads the stack's configuration from the environment, ``databases`` creates the
tracking and auth databases, ``process`` starts and stops the server (and, for trying the S3
path on a laptop, a loopback S3 endpoint served by moto).
"""
