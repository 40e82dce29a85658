"""The monitoring stack's Grafana provisioner (a Lambda asset: standard library + boto3 only)."""
