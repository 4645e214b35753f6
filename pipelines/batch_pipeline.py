"""The batch-scoring pipeline: a registered model scores the census of the newest published
snapshot of its feature set and writes its worklist (CSV, a self-contained page, a summary).

Run daily on a cluster (a recurring run, as the monitoring pipeline's), and through kfp.local on
a laptop (``hmlops batch pipeline run``). Any registered model: its own record says which
feature set, use case and capacity apply.
"""

from typing import Any

from kfp import dsl, kubernetes

from components import batch_components
from components.data_components import DEFAULT_IMAGE

PIPELINE_NAME = "hospital-batch-scoring-pipeline"
STORE_PVC = "hmlops-store"
STORE_MOUNT = "/mnt/hmlops-store"


def make_batch_pipeline(image: str = DEFAULT_IMAGE) -> Any:
    ops = batch_components.build(image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=(
            "The day's census scored by a registered model and written as its worklist: the "
            "highest risks first, as many as the team's declared capacity, with reasons."
        ),
    )
    def batch_pipeline(
        model: str,  # a registered model whose primary threshold is a capacity
        ref: str = "champion",
        store_root: str = STORE_MOUNT,
        census_size: int = 0,
        capacity: int = 0,
        mlflow_tracking_uri: str = "",
    ) -> None:
        task = ops.score(
            model=model,
            ref=ref,
            store_root=store_root,
            census_size=census_size,
            capacity=capacity,
            mlflow_tracking_uri=mlflow_tracking_uri,
        ).set_display_name("score the census, write the worklist")
        kubernetes.mount_pvc(task, pvc_name=STORE_PVC, mount_path=STORE_MOUNT)
        kubernetes.add_pod_label(task, "hospital-mlops.io/phi", "tokenized")
        kubernetes.use_secret_as_env(
            task,
            secret_name="hmlops-registry",
            secret_key_to_env={"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI"},
        )
        task.set_caching_options(False)  # every day's census is new

    return batch_pipeline
