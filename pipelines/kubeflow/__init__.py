"""The step graph on Kubeflow Pipelines v2: ``get_kfp_pipeline()`` (compile it for a cluster) and
``run_kubeflow_local()`` (KFP's own local runner, no cluster, no Docker). Needs the ``kubeflow`` extra."""
