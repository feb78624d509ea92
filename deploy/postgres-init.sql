-- MLflow's tables in a database of their own: MLflow and Optuna each keep their schema version
-- in a table named alembic_version, and one database cannot hold both.
CREATE DATABASE nar_mlflow OWNER nar;
