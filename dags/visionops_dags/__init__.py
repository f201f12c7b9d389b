"""Helpers of the visionops DAGs (dags/*.py): settings, the task factory, the failure alert.

Nothing here imports visionops: a DAG file parses in Airflow's own virtualenv, and each task
runs the visionops CLI in the visionops virtualenv or image (docs/pipelines.md).
"""
