"""The monitoring pipeline: monitor the champion's windows → decide on retraining → retrain on
the newest published snapshot → compare the challenger with the champion on the recent window.

Run on a schedule (``manifests/kfp/monitoring-recurring-run.yaml``) on a cluster, and through
kfp.local on a laptop (``hmlops monitor pipeline run``). It never starts a rollout: a
challenger that passes the comparison waits for ``hmlops rollout advance``.
"""

from typing import Any

from kfp import dsl, kubernetes

from components import monitoring_components
from components.data_components import DEFAULT_IMAGE

PIPELINE_NAME = "hospital-monitoring-pipeline"
STORE_PVC = "hmlops-store"
STORE_MOUNT = "/mnt/hmlops-store"
SECRETS = (
    ("hmlops-registry", "MLFLOW_TRACKING_URI"),
    ("hmlops-prediction-log", "HMLOPS_PREDICTION_LOG_URL"),
    ("hmlops-drift-db", "HMLOPS_DRIFT_DB_URL"),
)


def make_monitoring_pipeline(image: str = DEFAULT_IMAGE) -> Any:
    from hospital_mlops.governance.config import first_model_name

    ops = monitoring_components.build(image)
    first_model = first_model_name()  # the model parameter's default, from the configuration

    def _wired(task: Any, store: bool = False) -> Any:
        if store:
            kubernetes.mount_pvc(task, pvc_name=STORE_PVC, mount_path=STORE_MOUNT)
        kubernetes.add_pod_label(task, "hospital-mlops.io/phi", "tokenized")
        # Connection strings by Secret reference (manifests/examples/secrets.example.yaml); a
        # non-empty pipeline parameter overrides them, as on a laptop.
        for secret, variable in SECRETS:
            kubernetes.use_secret_as_env(
                task, secret_name=secret, secret_key_to_env={variable: variable}
            )
        task.set_caching_options(False)  # every run looks at new predictions
        return task

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=(
            "Drift, calibration, performance and workflow windows of the champion; retraining "
            "when a trigger fires; the challenger compared on the recent window."
        ),
    )
    def monitoring_pipeline(
        run_id: str,
        model: str = first_model,
        ref: str = "champion",
        # "": the champion's own (its feature set's source; its use case's catalog purpose)
        source: str = "",
        use: str = "",
        store_root: str = STORE_MOUNT,
        catalog_path: str = "",
        policy_path: str = "",
        protocol_change: str = "",
        mlflow_tracking_uri: str = "",
        prediction_log_url: str = "",
        drift_store_url: str = "",
    ) -> None:
        monitor = _wired(
            ops.monitor(
                model=model,
                ref=ref,
                policy_path=policy_path,
                mlflow_tracking_uri=mlflow_tracking_uri,
                prediction_log_url=prediction_log_url,
                drift_store_url=drift_store_url,
            ).set_display_name("monitor windows")
        )
        decide = _wired(
            ops.decide(
                model=model,
                ref=ref,
                policy_path=policy_path,
                mlflow_tracking_uri=mlflow_tracking_uri,
                protocol_change=protocol_change,
                run=monitor.outputs["run"],
            ).set_display_name("retraining triggers")
        )
        with dsl.If(decide.outputs["Output"] == True, name="retrain"):  # noqa: E712 - KFP
            retrain = _wired(
                ops.retrain(
                    source=source,
                    use=use,
                    store_root=store_root,
                    run_id=run_id,
                    catalog_path=catalog_path,
                    mlflow_tracking_uri=mlflow_tracking_uri,
                    model=model,
                    ref=ref,
                ).set_display_name("retrain on the newest snapshot"),
                store=True,
            )
            with dsl.If(retrain.outputs["Output"] > 0, name="registered"):
                _wired(
                    ops.compare(
                        model=model,
                        ref=ref,
                        challenger=retrain.outputs["Output"],
                        policy_path=policy_path,
                        mlflow_tracking_uri=mlflow_tracking_uri,
                        prediction_log_url=prediction_log_url,
                    ).set_display_name("challenger vs champion, recent window")
                )

    return monitoring_pipeline
