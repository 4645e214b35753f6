"""The hospital pipeline: ingest → normalize → validate → features → publish, then (unless
``train_model`` is false) train → evaluate → gate → register.

The same definition runs on a laptop (kfp.local) and compiles to KFP IR for a cluster. On a
cluster, the store is a PersistentVolumeClaim mounted into every step, the HMAC key comes from a
Kubernetes Secret, and steps that touch raw PHI carry a pod label that NetworkPolicies and audit
tooling select on.
"""

from typing import Any

from kfp import dsl, kubernetes

from components import model_components
from components.data_components import DEFAULT_IMAGE, build

PIPELINE_NAME = "hospital-data-pipeline"
STORE_PVC = "hmlops-store"
STORE_MOUNT = "/mnt/hmlops-store"
HMAC_SECRET = "hmlops-hmac-key"
HMAC_SECRET_KEY = "key"
PHI_LABEL = "hospital-mlops.io/phi"


def make_pipeline(image: str = DEFAULT_IMAGE) -> Any:
    from hospital_mlops.use_case import load_use_case

    ops = build(image)
    model_ops = model_components.build(image)
    # the parameters' defaults, from the configuration: the first use case's first source and
    # its catalog purpose (a run submits its own; `hmlops pipeline submit` always does)
    first = load_use_case()
    default_source, default_use = next(iter(first.sources)), first.purpose or ""

    def _cluster_wiring(task: Any, phi: bool) -> Any:
        kubernetes.mount_pvc(task, pvc_name=STORE_PVC, mount_path=STORE_MOUNT)
        kubernetes.add_pod_label(task, PHI_LABEL, "raw" if phi else "tokenized")
        return task

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=(
            "Catalogued extract → validated, content-hashed feature snapshot with lineage → "
            "time-validated, gated model registered in MLflow with its evidence."
        ),
    )
    def data_pipeline(
        run_id: str,
        source: str = default_source,
        use: str = default_use,
        extract: str = "",
        store_root: str = STORE_MOUNT,
        catalog_path: str = "",
        use_case: str = "",
        train_model: bool = True,
        mlflow_tracking_uri: str = "",
    ) -> None:
        common = {
            "source": source,
            "use": use,
            "store_root": store_root,
            "run_id": run_id,
            "catalog_path": catalog_path,
            "use_case": use_case,
        }
        finalize = ops.finalize(train_model=train_model, **common).set_display_name("record run")
        _cluster_wiring(finalize, phi=False)
        with dsl.ExitHandler(finalize, name="data-layers"):
            ingest = ops.ingest(extract=extract, **common).set_display_name("ingest")
            _cluster_wiring(ingest, phi=True)
            normalize = ops.normalize(
                raw_manifest=ingest.outputs["raw_manifest"], **common
            ).set_display_name("normalize")
            _cluster_wiring(normalize, phi=True)
            kubernetes.use_secret_as_env(
                normalize,
                secret_name=HMAC_SECRET,
                secret_key_to_env={HMAC_SECRET_KEY: "HMLOPS_HMAC_KEY"},
            )
            validate = ops.validate(
                normalized=normalize.outputs["normalized"], **common
            ).set_display_name("validate")
            _cluster_wiring(validate, phi=False)
            features = ops.features(
                normalized=normalize.outputs["normalized"], **common
            ).set_display_name("features")
            features.after(validate)
            _cluster_wiring(features, phi=False)
            publish = ops.publish(features=features.outputs["features"], **common).set_display_name(
                "publish"
            )
            _cluster_wiring(publish, phi=False)
            for task in (ingest, normalize, validate, features, publish, finalize):
                task.set_caching_options(False)
            with dsl.If(train_model == True, name="model"):  # noqa: E712 - a KFP condition
                train = model_ops.train(published_sha256=publish.output, **common).set_display_name(
                    "train"
                )
                evaluate = model_ops.evaluate(
                    trained=train.outputs["trained"], **common
                ).set_display_name("evaluate + gate")
                for task in (train, evaluate):
                    _cluster_wiring(task, phi=False)
                    task.set_caching_options(False)
                # A model that fails its gates is still logged (its evidence kept), never
                # registered: the register step reads the gate verdict and acts on it.
                with dsl.If(evaluate.outputs["Output"] == True, name="gates-passed"):  # noqa: E712
                    register = model_ops.register(
                        trained=train.outputs["trained"],
                        evidence=evaluate.outputs["evidence"],
                        mlflow_tracking_uri=mlflow_tracking_uri,
                        **common,
                    ).set_display_name("register candidate")
                with dsl.Else(name="gates-failed"):
                    rejected = model_ops.register(
                        trained=train.outputs["trained"],
                        evidence=evaluate.outputs["evidence"],
                        mlflow_tracking_uri=mlflow_tracking_uri,
                        **common,
                    ).set_display_name("log rejected model")
                for task in (register, rejected):
                    _cluster_wiring(task, phi=False)
                    task.set_caching_options(False)

    return data_pipeline
