-- Run once by the postgres image on an empty data volume: the tracking store (runs, model
-- registry) and the auth store (users, permissions), as `visionops server start` creates them.
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
